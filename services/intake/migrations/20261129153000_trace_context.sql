-- The W3C trace context of what queued a mail (the customer's mail that
-- opened the ticket, the agent's reply): its sending (`smtp.relay`)
-- continues that trace.
ALTER TABLE outgoing
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text;
