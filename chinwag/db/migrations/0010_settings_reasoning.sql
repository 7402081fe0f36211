-- Model settings per session (`temperature`, `top_p`, `max_output_tokens`, `reasoning_effort`): only the keys set
-- are stored; a missing key is left out of the model request, so the provider's default applies.
--
-- An assistant message keeps the reasoning the model streamed (its summary or `reasoning_content`), shown to the
-- user and never sent back to the model as text. Null when the model streamed none.
--
-- A constant default and a nullable column: PostgreSQL adds both without rewriting the tables.

ALTER TABLE sessions ADD COLUMN settings jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE messages ADD COLUMN reasoning text;
