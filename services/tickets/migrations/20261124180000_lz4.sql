-- Mail bodies and files are large: LZ4 costs a fraction of the CPU of the
-- default pglz for about the same size (and gives up quickly on files that
-- are compressed already).
ALTER TABLE articles ALTER COLUMN body SET COMPRESSION lz4;
ALTER TABLE articles ALTER COLUMN html SET COMPRESSION lz4;
ALTER TABLE attachments ALTER COLUMN content SET COMPRESSION lz4;
