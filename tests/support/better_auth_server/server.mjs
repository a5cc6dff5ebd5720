// A real Better Auth server for the tests: its PostgreSQL adapter on the test
// cluster, its own migrations, its HTTP API on a free local port.
//
//   BETTER_AUTH_DATABASE_URL=postgresql://... BETTER_AUTH_SECRET=... node server.mjs
//
// BETTER_AUTH_NAMING=snake_plural renames the tables and columns todo-server
// reads, as projects whose ORM schema is snake_case do (users, sessions.user_id).
//
// BETTER_AUTH_JWT=EdDSA (or RS256, PS256, ES256, ES512) turns on the jwt and
// bearer plugins with keys of that algorithm: GET /api/auth/token and
// /api/auth/jwks, and the test-only POST /__test__/rotate-jwk, which makes the
// plugin generate a new key (it signs with the newest from then on; withdrawing a
// key is a DELETE from the jwks table). BETTER_AUTH_BASE_PATH=/myapp/ serves under
// baseURL http://127.0.0.1:PORT/myapp/ (a base URL with a path is Better Auth's
// whole API prefix; tokens still carry only the origin in iss and aud).
//
// Runs Better Auth's migrations (the tables its CLI would create), listens on
// 127.0.0.1, prints one JSON line {"url": "http://127.0.0.1:PORT", "api": the
// URL its endpoints live under} and serves until stdin closes, so it never
// outlives the test that started it.
import { createServer } from "node:http";

import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";
import { bearer } from "better-auth/plugins/bearer";
import { createJwk, jwt } from "better-auth/plugins/jwt";
import pg from "pg";

const databaseUrl = process.env.BETTER_AUTH_DATABASE_URL;
const secret = process.env.BETTER_AUTH_SECRET;
if (!databaseUrl || !secret) {
  console.error("BETTER_AUTH_DATABASE_URL and BETTER_AUTH_SECRET are required");
  process.exit(2);
}

const server = createServer();
// BETTER_AUTH_PORT: a port chosen by the test (one a service is already told about).
const port = Number(process.env.BETTER_AUTH_PORT ?? 0);
await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${server.address().port}`;
const basePath = process.env.BETTER_AUTH_BASE_PATH;
const baseURL = basePath ? origin + basePath : origin;

const KEY_PAIR_CONFIGS = {
  EdDSA: { alg: "EdDSA", crv: "Ed25519" },
  RS256: { alg: "RS256", modulusLength: 2048 },
  PS256: { alg: "PS256", modulusLength: 2048 },
  ES256: { alg: "ES256" },
  ES512: { alg: "ES512" },
};
const jwtAlgorithm = process.env.BETTER_AUTH_JWT;
if (jwtAlgorithm && !KEY_PAIR_CONFIGS[jwtAlgorithm]) {
  console.error(`BETTER_AUTH_JWT must be one of ${Object.keys(KEY_PAIR_CONFIGS).join(", ")}`);
  process.exit(2);
}
const jwtOptions = jwtAlgorithm ? { jwks: { keyPairConfig: KEY_PAIR_CONFIGS[jwtAlgorithm] } } : null;

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
if (jwtOptions) {
  options.plugins = [jwt(jwtOptions), bearer()];
}
// BETTER_AUTH_COOKIE_CACHE=jwt: the session-data cookie is an HS256 JWT signed
// with the secret, which todo-server must never take for an access token.
if (process.env.BETTER_AUTH_COOKIE_CACHE === "jwt") {
  options.session = {
    ...options.session,
    cookieCache: { enabled: true, strategy: "jwt", maxAge: 300 },
  };
}
// E-mail verification tokens are HS256 JWTs signed with the secret too; the
// ones Better Auth "sends" are kept for GET /__test__/verification-token.
const verificationTokens = new Map();
options.emailVerification = {
  sendOnSignUp: true,
  sendVerificationEmail: async ({ user, token }) => {
    verificationTokens.set(user.email, token);
  },
};
const auth = betterAuth(options);

const { runMigrations } = await getMigrations(auth.options);
await runMigrations();

const handler = toNodeHandler(auth);
server.on("request", async (req, res) => {
  if (req.method === "GET" && req.url.startsWith("/__test__/verification-token?")) {
    const email = new URL(req.url, origin).searchParams.get("email");
    const token = verificationTokens.get(email);
    res.writeHead(token ? 200 : 404, { "content-type": "application/json" });
    res.end(JSON.stringify({ token: token ?? null }));
    return;
  }
  if (jwtOptions && req.method === "POST" && req.url === "/__test__/rotate-jwk") {
    try {
      const key = await createJwk({ context: await auth.$context }, jwtOptions);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ kid: key.id }));
    } catch (error) {
      res.writeHead(500, { "content-type": "text/plain" });
      res.end(String(error?.stack ?? error));
    }
    return;
  }
  handler(req, res);
});
const api = (await auth.$context).baseURL.replace(/\/+$/, "");
console.log(JSON.stringify({ url: origin, api }));

const stop = () => {
  server.close();
  pool.end().finally(() => process.exit(0));
};
process.stdin.on("end", stop);
process.stdin.on("close", stop);
process.stdin.resume();
process.on("SIGTERM", stop);
