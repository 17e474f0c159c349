-- proposal 2: the links of the generated statement, keyed by (key, value) instead of 'key:value'
-- strings; the surviving ones as pairs of integer ids.
CREATE TABLE customer_id_edges AS
WITH links AS (
  SELECT 'customer_id' AS a_key, k_customer_id AS a_value, 'email' AS b_key, k_email AS b_value, seen_at FROM customer_id_records WHERE k_customer_id IS NOT NULL AND k_email IS NOT NULL
  UNION ALL
  SELECT 'email' AS a_key, k_email AS a_value, 'customer_id' AS b_key, k_customer_id AS b_value, seen_at FROM customer_id_records WHERE k_customer_id IS NOT NULL AND k_email IS NOT NULL
  UNION ALL
  SELECT 'customer_id' AS a_key, k_customer_id AS a_value, 'cookie_id' AS b_key, k_cookie_id AS b_value, seen_at FROM customer_id_records WHERE k_customer_id IS NOT NULL AND k_cookie_id IS NOT NULL
  UNION ALL
  SELECT 'cookie_id' AS a_key, k_cookie_id AS a_value, 'customer_id' AS b_key, k_customer_id AS b_value, seen_at FROM customer_id_records WHERE k_customer_id IS NOT NULL AND k_cookie_id IS NOT NULL
),
first_links AS (
  SELECT a_key, a_value, b_key, b_value, min(seen_at) AS first_seen
  FROM links
  GROUP BY a_key, a_value, b_key, b_value
),
ranked AS (
  SELECT a_key, a_value, b_key, b_value,
         ROW_NUMBER() OVER (PARTITION BY a_key, a_value, b_key ORDER BY first_seen, b_value) AS rank_in_key
  FROM first_links
),
dropped AS (
  SELECT a_key, a_value, b_key, b_value FROM ranked WHERE (b_key = 'email' AND rank_in_key > 2) OR (b_key = 'cookie_id' AND rank_in_key > 10)
),
kept AS (
  -- a link survives when neither end has too many values of the other's key
  SELECT r.a_key, r.a_value, r.b_key, r.b_value
  FROM ranked r
  WHERE NOT EXISTS (SELECT 1 FROM dropped x WHERE x.a_key = r.a_key AND x.a_value = r.a_value AND x.b_key = r.b_key AND x.b_value = r.b_value)
    AND NOT EXISTS (SELECT 1 FROM dropped x WHERE x.a_key = r.b_key AND x.a_value = r.b_value AND x.b_key = r.a_key AND x.b_value = r.a_value)
)
SELECT na.node AS a, nb.node AS b
FROM kept k
JOIN customer_id_nodes na ON na.key_name = k.a_key AND na.key_value = k.a_value
JOIN customer_id_nodes nb ON nb.key_name = k.b_key AND nb.key_value = k.b_value
