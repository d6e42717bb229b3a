-- User status, after Coder's: an active user may log in; a suspended one may not and
-- holds no sessions. Existing users stay active.
ALTER TABLE users ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
