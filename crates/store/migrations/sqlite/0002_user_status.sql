-- User status, after Coder's: an active user may log in; a suspended one may not, and
-- their sessions do not resolve until they are active again. Existing users stay active.
ALTER TABLE users ADD COLUMN status TEXT NOT NULL DEFAULT 'active';
