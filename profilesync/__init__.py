"""profilesync: a profile for every Supabase signup, created off the signup's hot path."""
