// A real Better Auth server for the tests: its PostgreSQL adapter on the test
// cluster, its own migrations, its HTTP API on a free local port.
//
//   BETTER_AUTH_DATABASE_URL=postgresql://... BETTER_AUTH_SECRET=... node server.mjs
//
// BETTER_AUTH_NAMING=snake_plural renames the tables and columns todo-server
// reads, as projects whose ORM schema is snake_case do (users, sessions.user_id).
// Runs Better Auth's migrations (the tables its CLI would create), listens on
// 127.0.0.1, prints one JSON line {"url": "http://127.0.0.1:PORT"} and serves
// until stdin closes, so it never outlives the test that started it.
import { createServer } from "node:http";

import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import pg from "pg";

const databaseUrl = process.env.BETTER_AUTH_DATABASE_URL;
const secret = process.env.BETTER_AUTH_SECRET;
if (!databaseUrl || !secret) {
  console.error("BETTER_AUTH_DATABASE_URL and BETTER_AUTH_SECRET are required");
  process.exit(2);
}

const server = createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const baseURL = `http://127.0.0.1:${server.address().port}`;

const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
const options = {
  baseURL,
  secret,
  database: pool,
  emailAndPassword: { enabled: true },
  rateLimit: { enabled: false },
  telemetry: { enabled: false },
  logger: { level: "error" },
};
if (process.env.BETTER_AUTH_NAMING === "snake_plural") {
  options.user = { modelName: "users" };
  options.session = {
    modelName: "sessions",
    fields: { token: "session_token", userId: "user_id", expiresAt: "expires_at" },
  };
}
const auth = betterAuth(options);

const { runMigrations } = await getMigrations(auth.options);
await runMigrations();

server.on("request", toNodeHandler(auth));
console.log(JSON.stringify({ url: baseURL }));

const stop = () => {
  server.close();
  pool.end().finally(() => process.exit(0));
};
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
