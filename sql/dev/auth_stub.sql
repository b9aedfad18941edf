-- Development only: a Supabase-compatible auth schema for plain PostgreSQL.
-- Applied by `profilesync migrate --dev-auth-stub`; never apply this to a Supabase project.
-- Column names and types follow Supabase's auth.users; only what an app or this service reads is kept.

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'supabase_auth_admin'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      BEGIN
        -- service_role bypasses row level security on Supabase (BYPASSRLS); the others do not
        BEGIN
          EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN%s', r,
                                    CASE WHEN r = 'service_role' THEN ' BYPASSRLS' ELSE '' END);
        EXCEPTION WHEN insufficient_privilege THEN
          -- only a superuser may grant BYPASSRLS; a CREATEROLE owner gets the role without it
          EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
          RAISE NOTICE 'auth stub: role % created without BYPASSRLS (only a superuser may grant it)', r;
        END;
      EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;  -- another session created it concurrently
      END;
    END IF;
  END LOOP;
END $$;

CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE IF NOT EXISTS auth.users (
  instance_id uuid,
  id uuid PRIMARY KEY,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change_token_new varchar(255),
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_super_admin boolean,
  created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now(),
  phone text UNIQUE DEFAULT NULL,
  phone_confirmed_at timestamptz,
  phone_change text DEFAULT '',
  phone_change_token varchar(255) DEFAULT '',
  phone_change_sent_at timestamptz,
  email_change_token_current varchar(255) DEFAULT '',
  email_change_confirm_status smallint DEFAULT 0,
  banned_until timestamptz,
  is_sso_user boolean NOT NULL DEFAULT false,
  deleted_at timestamptz,
  is_anonymous boolean NOT NULL DEFAULT false
);

-- Supabase's helper: the caller's user id from the request's JWT claims (NULL outside a request).
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE
AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

GRANT USAGE ON SCHEMA auth TO supabase_auth_admin, anon, authenticated, service_role;
GRANT ALL ON auth.users TO supabase_auth_admin;
GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role, supabase_auth_admin;
