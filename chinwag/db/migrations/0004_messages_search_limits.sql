-- Messages: full-text search that cannot fail storing an answer.
--
-- PostgreSQL refuses a tsvector over 1 MiB ("string is too long for tsvector"). A long answer with many distinct
-- words (a table of data, a log, code) passes it, and the generated column of 0001 then failed the UPDATE that
-- stores the answer: the run could not end. The index now covers as much of the start of each message as fits, the
-- same way 0002 did for files (`files_search_vector`: up to a million characters, halved until it fits); the whole
-- text is still stored and returned.

ALTER TABLE messages DROP COLUMN search;  -- its index goes with it
ALTER TABLE messages ADD COLUMN search tsvector GENERATED ALWAYS AS (files_search_vector(content)) STORED;
CREATE INDEX messages_search_idx ON messages USING gin (search);
