-- Users and their tasks.
--
-- User ids are opaque text: Better Auth and other frontends issue string ids,
-- not UUIDs. Local accounts (registered here) have a password hash; users known
-- only from a frontend's token have none.
CREATE TABLE users (
    id            text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 255),
    email         text CHECK (length(email) <= 254),
    name          text CHECK (length(name) <= 100),
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One local account per email, whatever its case.
CREATE UNIQUE INDEX users_local_email_key ON users (lower(email))
    WHERE password_hash IS NOT NULL;

-- Enum values sort in declaration order, so ORDER BY priority means low < medium < high.
CREATE TYPE task_priority AS ENUM ('low', 'medium', 'high');

CREATE TABLE tasks (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        text NOT NULL CHECK (length(title) BETWEEN 1 AND 255),
    description  text CHECK (length(description) <= 2000),
    completed    boolean NOT NULL DEFAULT false,
    completed_at timestamptz,
    priority     task_priority NOT NULL DEFAULT 'medium',
    due_at       timestamptz,
    tags         text[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 20),
    -- Bumped on every write; the ETag is derived from it.
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: the row keeps its data until restored.
    deleted_at   timestamptz,
    CHECK (completed = (completed_at IS NOT NULL))
);

-- The default listing: a user's live tasks, newest first.
CREATE INDEX tasks_user_created_idx ON tasks (user_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

-- Incremental sync reads every change, deleted rows included.
CREATE INDEX tasks_user_updated_idx ON tasks (user_id, updated_at, id);
