-- The W3C trace context of the event that queued a delivery: its sending
-- (`pager.deliver <channel>`) continues that trace, and the request to
-- PagerDuty or a webhook carries it on in `traceparent`.
ALTER TABLE deliveries
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text;
