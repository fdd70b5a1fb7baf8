-- Notifications already delivered, so a retried `send_notification` activity sends nothing twice.
-- No personal data here: the notification id, the Message-ID built from it, and the channel.

CREATE TABLE notifications_sent (
    notification_id  text PRIMARY KEY,   -- decided by the workflow, the same on every retry
    message_id       text        NOT NULL,
    channel          text        NOT NULL,
    sent_at          timestamptz NOT NULL DEFAULT now()
);
