-- The seed application's tables. Created only when absent (an existing Supabase project keeps its own
-- definitions), and only for the seed's profile mapping: with PROFILESYNC_CONFIG naming the app's own profile
-- table, profilesync.migrate sets profile_sync.seed_tables to 'off' for its transaction and no seed table is
-- made. Unset (a Supabase CLI file applied by `supabase db push`) means the seed's.
DO $$
BEGIN
  IF pg_catalog.current_setting('profile_sync.seed_tables', true) IS DISTINCT FROM 'off' THEN
    CREATE TABLE IF NOT EXISTS public.user_profiles (
      id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
      email text,
      full_name text,
      avatar_url text,
      preferences jsonb NOT NULL DEFAULT '{}'::jsonb,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE IF NOT EXISTS public.chat_conversations (
      id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
      user_id uuid NOT NULL REFERENCES public.user_profiles (id) ON DELETE CASCADE,
      title text,
      created_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE INDEX IF NOT EXISTS chat_conversations_user_id_idx ON public.chat_conversations (user_id);
  END IF;
END $$;
