-- proposal 2: identifiers get an integer id (`node`), so the edges, the connected-components
-- rounds and the claims join and group integers instead of 'key:value' strings; the string is
-- built only for the anchors (proposal 1 included). customer_id_cc's statements are unchanged.
CREATE TABLE customer_id_nodes AS
WITH observations AS (
  SELECT 'customer_id' AS key_name, k_customer_id AS key_value, 1 AS priority, seen_at FROM customer_id_records WHERE k_customer_id IS NOT NULL
  UNION ALL
  SELECT 'email' AS key_name, k_email AS key_value, 2 AS priority, seen_at FROM customer_id_records WHERE k_email IS NOT NULL
  UNION ALL
  SELECT 'cookie_id' AS key_name, k_cookie_id AS key_value, 3 AS priority, seen_at FROM customer_id_records WHERE k_cookie_id IS NOT NULL
)
-- `id` is the number the generated connected-components statements read.
SELECT node, key_name, key_value, priority, first_seen, node AS id FROM (
SELECT row_number() OVER () AS node, key_name, key_value, min(priority) AS priority, min(seen_at) AS first_seen
FROM observations
GROUP BY key_name, key_value
) numbered
