-- Which Layer 1 rows already hold the provider's own token count: a run calibrates only the rows that do not, so
-- the counts of an old history are not rewritten by every run (its cost per message stays flat as a session grows).
--
-- A NOT NULL column with a constant default: PostgreSQL adds it without rewriting the table. Existing rows start as
-- offline counts, and the next run in their session calibrates them once.

ALTER TABLE llm_context ADD COLUMN tokens_exact boolean NOT NULL DEFAULT false;
