-- When sla fired the escalation step a trigger pages for (the breach
-- itself, for the first step): page latency is measured from there as well
-- as from the queued row. NULL for follow-ups (resolves).
ALTER TABLE deliveries ADD COLUMN escalated_at timestamptz;
