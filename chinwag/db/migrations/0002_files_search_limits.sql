-- Files: full-text search that cannot fail an upload, and a stored character count.
--
-- PostgreSQL refuses a tsvector over 1 MiB ("string is too long for tsvector"), which the text of a large file with
-- many distinct words (logs, hashes, data) passes: the generated column of 0001 then failed the whole INSERT. The
-- index now covers as much of the text's start as fits (up to a million characters); the file tools fall back to a
-- substring match for the rest.
-- length(text) decompresses the whole text of every row it reads; listing files needs the count, so it is stored.

CREATE FUNCTION files_search_vector(body text) RETURNS tsvector
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    n integer := least(length(body), 1000000);
BEGIN
    LOOP
        BEGIN
            RETURN to_tsvector('simple', left(body, n));
        EXCEPTION WHEN program_limit_exceeded THEN
            n := n / 2;
        END;
    END LOOP;
END
$$;

ALTER TABLE files DROP COLUMN search;  -- its index goes with it
ALTER TABLE files ADD COLUMN search tsvector GENERATED ALWAYS AS (files_search_vector(coalesce(text, ''))) STORED;
CREATE INDEX files_search_idx ON files USING gin (search);

ALTER TABLE files ADD COLUMN text_chars integer NOT NULL DEFAULT 0;
UPDATE files SET text_chars = length(text) WHERE text IS NOT NULL;
