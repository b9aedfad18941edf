-- The sanitising rules for values taken from a user's metadata, one definition used on every path: profile
-- creation and sync (worker, guards, ensure_profile) and the check on later UPDATEs of the profile table.

-- A metadata value as safe display text: strings only, trimmed, capped, without control characters, the
-- line/paragraph separators U+2028/U+2029 and every format character (Unicode category Cf: U+061C,
-- U+200B-U+200F, U+202A-U+202E, U+2060-U+2064, U+2066-U+206F, U+FEFF, U+FFF9-U+FFFB, soft hyphen …).
-- PostgreSQL regular expressions have no \p{Cf}, so the class is spelled out from the Unicode 15 table.
CREATE OR REPLACE FUNCTION profile_sync.clean_text(value jsonb, max_len integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT nullif(
           pg_catalog.left(
             pg_catalog.btrim(
               pg_catalog.regexp_replace(
                 pg_catalog.left(value #>> '{}', max_len * 4),
                 '[[:cntrl:]\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f'
                 '\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]', '', 'g')),
             max_len),
           '')
  WHERE pg_catalog.jsonb_typeof(value) = 'string'
$$;

-- An avatar URL: http(s) only, capped, no whitespace, control or format characters anywhere (a U+202E can make
-- `https://evil.test/gpj.exe` display as something else), and no host that points inside the server's own
-- network if something ever fetches the avatar: localhost, loopback (127/8, ::1), link-local (169.254/16,
-- the cloud metadata address; fe80::/10), private (10/8, 172.16/12, 192.168/16; fc00::/7), 0.0.0.0.
-- Numeric hosts in decimal/hex/octal forms (http://2130706433/) are refused too: only dotted quads pass.
-- Anything else is dropped (NULL).
CREATE OR REPLACE FUNCTION profile_sync.clean_url(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT s.v FROM (
    SELECT value #>> '{}' AS v,
           pg_catalog.lower(pg_catalog.substring(value #>> '{}',
             '^[hH][tT][tT][pP][sS]?://(?:[^/?#@]*@)?(\[[^]]*\]|[^/?#:]*)')) AS host
  ) s
  WHERE pg_catalog.jsonb_typeof(value) = 'string'
    AND pg_catalog.length(s.v) <= 2048
    AND s.v ~* '^https?://[^[:space:][:cntrl:]]+$'
    AND s.v !~ '[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]'
    AND s.host <> ''
    AND s.host !~ '^(localhost|.*\.localhost|.*\.local|.*\.internal)\.?$'
    AND s.host !~ '^\['  -- IPv6 literals (::1, fe80::, fc00::, mapped IPv4 …): no avatar needs one
    -- numeric hosts: only plain dotted quads (not 2130706433, 0x7f.1, 0177.0.0.1), and not internal ones
    AND (s.host !~ '^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$'
         OR (s.host ~ '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$'
             AND s.host !~ '^(0|10|127)\.'
             AND s.host !~ '^169\.254\.'
             AND s.host !~ '^172\.(1[6-9]|2[0-9]|3[01])\.'
             AND s.host !~ '^192\.168\.'))
$$;
