-- Accounts an administrator manages: a disabled user keeps their data but cannot sign in, and every credential of
-- theirs (access tokens, refresh tokens, API keys) stops working; `last_login_at` is set by each password login.
--
-- A NOT NULL column with a constant default and a nullable one: PostgreSQL adds both without rewriting the table.

ALTER TABLE users ADD COLUMN disabled boolean NOT NULL DEFAULT false;
ALTER TABLE users ADD COLUMN last_login_at timestamptz;

-- The last-admin rule locks the active admins on every demote, disable or delete: find them without a scan.
CREATE INDEX users_active_admins_idx ON users (id) WHERE role = 'admin' AND NOT disabled;

-- A user's refresh tokens, to revoke them all at once (password change, disable).
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id) WHERE revoked_at IS NULL;
