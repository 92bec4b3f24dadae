-- Every message the SMTP server accepted, raw, committed before its 250.
CREATE TABLE mails (
    id            bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    mail_from     text NOT NULL,
    rcpt_to       text[] NOT NULL,
    raw           bytea NOT NULL,
    -- Set once forwarded: the ticket it went on, or why it went nowhere.
    ticket_number text,
    ignored       text,
    forwarded_at  timestamptz
);

-- Every Message-ID Hotline has received or sent, with its ticket: replies
-- thread by In-Reply-To / References.
CREATE TABLE message_ids (
    message_id    text PRIMARY KEY,
    ticket_number text NOT NULL,
    seen_at       timestamptz NOT NULL DEFAULT now()
);
