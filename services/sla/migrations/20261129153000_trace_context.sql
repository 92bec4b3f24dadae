-- The W3C trace context of the event that started a clock's current wait:
-- the breach and every escalation of it continue that trace, so one trace
-- follows a fault from the mail or call that opened it to the page.
ALTER TABLE clocks
    ADD COLUMN traceparent text,
    ADD COLUMN tracestate text;
