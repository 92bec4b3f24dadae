-- Where a message taken from an IMAP mailbox came from: mailbox,
-- UIDVALIDITY and UID. A message fetched again after a crash is known by it
-- and stored once. NULL for mail received over SMTP.
ALTER TABLE mails ADD COLUMN origin text;
ALTER TABLE mails ADD CONSTRAINT mails_origin UNIQUE (origin);
