-- proposal 1: one record per distinct combination of key values, with the time it was first seen
-- (all that nodes and edges read), grouped per source before the UNION ALL: 25M rows become ~4.5M.
CREATE TABLE customer_id_records AS
SELECT TIMESTAMP '1900-01-01 00:00:00' AS seen_at,
       upper(trim(s.customer_id)) AS k_customer_id,
       CASE WHEN lower(trim(s.email)) IN ('', 'null', 'test@example.com') THEN NULL ELSE lower(trim(s.email)) END AS k_email,
       CAST(NULL AS VARCHAR) AS k_cookie_id
FROM customers s
UNION ALL
SELECT min(s.order_ts) AS seen_at,
       upper(trim(s.customer_id)) AS k_customer_id,
       CAST(NULL AS VARCHAR) AS k_email,
       CAST(NULL AS VARCHAR) AS k_cookie_id
FROM orders s
WHERE s.order_ts <= TIMESTAMP '2024-12-01 00:00:00'
GROUP BY 2
UNION ALL
SELECT min(s.ts) AS seen_at,
       upper(trim(s.customer_id)) AS k_customer_id,
       CAST(NULL AS VARCHAR) AS k_email,
       s.cookie_id AS k_cookie_id
FROM web_events s
WHERE s.ts <= TIMESTAMP '2024-12-01 00:00:00'
GROUP BY 2, 4
