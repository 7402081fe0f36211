-- An assistant message says how its run ended (`stop`, `length`, `interrupted`, `error`, `max_turns`), as its
-- `assistant_end` did: a cut answer must not read as a finished one in the history. Null on other messages and on
-- assistant messages from before this column (their run's row still has it).
--
-- A new nullable column with no default: PostgreSQL adds it without rewriting the table.

ALTER TABLE messages ADD COLUMN finish_reason text
    CHECK (finish_reason IN ('stop', 'length', 'interrupted', 'error', 'max_turns'));

-- A summary the model failed to make is not asked for again with the same input: the turn boundary it was to cover
-- is kept here, and summarizing waits until the history has moved past it.
ALTER TABLE sessions ADD COLUMN summary_failed_through_seq integer;
