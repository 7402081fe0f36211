-- The whole schema of chinwag 0.1. Ids are UUIDs (opaque strings on the wire); times are timestamptz.

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL,
    password_hash text NOT NULL,
    display_name  text NOT NULL,
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('admin', 'user')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Refresh tokens rotate: each use marks the row used and issues a new one in the same family.
-- Presenting a used token revokes the family.
CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   uuid NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at);

CREATE TABLE sessions (
    id                     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title                  text NOT NULL DEFAULT '',
    model                  text NOT NULL,
    instructions           text NOT NULL DEFAULT '',
    mcp_servers            text[],              -- NULL: every enabled server
    pinned                 boolean NOT NULL DEFAULT false,
    message_count          integer NOT NULL DEFAULT 0,  -- also the last allocated message seq
    input_tokens           bigint NOT NULL DEFAULT 0,
    output_tokens          bigint NOT NULL DEFAULT 0,
    context_tokens         integer NOT NULL DEFAULT 0,
    summary                text,
    summarized_through_seq integer,
    active_run_id          uuid,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
-- The session list: pinned first, then most recently active, keyset on (pinned, updated_at, id).
CREATE INDEX sessions_list_idx ON sessions (user_id, pinned DESC, updated_at DESC, id DESC);

-- Layer 2: everything the user saw. seq is allocated from sessions.message_count under its row lock.
CREATE TABLE messages (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    role        text NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
    content     text NOT NULL DEFAULT '',
    status      text NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'streaming', 'interrupted', 'error')),
    tool        jsonb,
    run_id      uuid,
    client_id   text,
    usage       jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    search      tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED,
    UNIQUE (session_id, seq)
);
CREATE INDEX messages_search_idx ON messages USING gin (search);
CREATE INDEX messages_streaming_idx ON messages (status) WHERE status = 'streaming';

-- Runs: one running run per session, guarded here so two workers cannot both start one.
CREATE TABLE runs (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id           uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    status               text NOT NULL DEFAULT 'running'
                         CHECK (status IN ('running', 'complete', 'interrupted', 'error', 'max_turns')),
    client_id            text,
    user_message_id      uuid,
    assistant_message_id uuid,
    finish_reason        text,
    started_at           timestamptz NOT NULL DEFAULT now(),
    ended_at             timestamptz
);
CREATE UNIQUE INDEX runs_one_running_idx ON runs (session_id) WHERE status = 'running';
CREATE UNIQUE INDEX runs_client_id_idx ON runs (session_id, client_id) WHERE client_id IS NOT NULL;

-- Layer 1: the SDK's items, in order, each with its token count.
CREATE TABLE llm_context (
    id          bigserial PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    item        jsonb NOT NULL,
    tokens      integer NOT NULL,
    turn_seq    integer,          -- seq of the user message that opened the turn
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_context_session_idx ON llm_context (session_id, id);

CREATE TABLE files (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    session_id    uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    name          text NOT NULL,
    size          bigint NOT NULL,
    content_type  text NOT NULL,
    sha256        text NOT NULL,
    tokens        integer NOT NULL DEFAULT 0,
    text          text,
    extract_error text,
    storage_key   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    search        tsvector GENERATED ALWAYS AS (to_tsvector('simple', coalesce(text, ''))) STORED
);
CREATE INDEX files_session_idx ON files (session_id, created_at);
CREATE INDEX files_search_idx ON files USING gin (search);
