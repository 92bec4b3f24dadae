-- Raw messages are written once per mail and read back to forward it: LZ4
-- costs a fraction of the CPU of the default pglz for about the same size.
ALTER TABLE mails ALTER COLUMN raw SET COMPRESSION lz4;
