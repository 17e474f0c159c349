-- DataFusion proposal 2 (with df-1): first/last/first_k/last_k/mode and the `latest by`
-- attributes as ordered aggregates (first_value(v ORDER BY …), array_slice(array_agg(v ORDER BY …)))
-- in the behavior's GROUP BY instead of ROW_NUMBER windows; windowed aggregates with FILTER
-- (WHERE …) instead of CASE; add_to_cart, checkout and order_attempt read only their widest window;
-- sequences as nested semi-joins (EXISTS), as DuckDB proposals 3, 4 and 6.
CREATE TABLE customer_rows_orders AS
SELECT k0.canonical_id AS canonical_id, s.order_id, s.customer_id, s.amount, s.status, s.order_ts
FROM orders s
LEFT JOIN customer_identity k0 ON k0.key_name = 'customer_id' AND k0.key_value = upper(trim(s.customer_id))
WHERE s.order_ts <= TIMESTAMP '2024-12-01 00:00:00';
CREATE TABLE customer_rows_web_events AS
SELECT COALESCE(k0.canonical_id, k1.canonical_id) AS canonical_id, s.cookie_id, s.customer_id, s.event, s.url, s.category, s.ts
FROM web_events s
LEFT JOIN customer_identity k0 ON k0.key_name = 'customer_id' AND k0.key_value = upper(trim(s.customer_id))
LEFT JOIN customer_identity k1 ON k1.key_name = 'cookie_id' AND k1.key_value = s.cookie_id
WHERE s.ts <= TIMESTAMP '2024-12-01 00:00:00';
CREATE TABLE customer_values AS
WITH profiles AS (
  SELECT DISTINCT canonical_id FROM customer_identity
),
rows_customers AS (
  SELECT COALESCE(k0.canonical_id, k1.canonical_id) AS canonical_id, s.customer_id, s.email, s.country, s.birth_date, s.signup_at
  FROM customers s
  LEFT JOIN customer_identity k0 ON k0.key_name = 'customer_id' AND k0.key_value = upper(trim(s.customer_id))
  LEFT JOIN customer_identity k1 ON k1.key_name = 'email' AND k1.key_value = CASE WHEN lower(trim(s.email)) IN ('', 'null', 'test@example.com') THEN NULL ELSE lower(trim(s.email)) END
),
rows_orders AS (
  SELECT * FROM customer_rows_orders
),
rows_web_events AS (
  SELECT * FROM customer_rows_web_events
),
ev_purchase AS (
  SELECT canonical_id, order_ts AS event_time, order_id, customer_id, amount, status, order_ts
  FROM rows_orders
  WHERE canonical_id IS NOT NULL
    AND order_ts <= TIMESTAMP '2024-12-01 00:00:00'
    AND (status = 'completed')
),
ev_refund AS (
  SELECT canonical_id, order_ts AS event_time, order_id, customer_id, amount, status, order_ts
  FROM rows_orders
  WHERE canonical_id IS NOT NULL
    AND order_ts <= TIMESTAMP '2024-12-01 00:00:00'
    AND (status = 'refunded')
),
ev_order_attempt AS (
  SELECT canonical_id, order_ts AS event_time, order_id, customer_id, amount, status, order_ts
  FROM rows_orders
  WHERE canonical_id IS NOT NULL
    AND order_ts <= TIMESTAMP '2024-12-01 00:00:00'
    AND order_ts > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '90 days'
),
ev_page_view AS (
  SELECT canonical_id, ts AS event_time, cookie_id, customer_id, event, url, category, ts
  FROM rows_web_events
  WHERE canonical_id IS NOT NULL
    AND ts <= TIMESTAMP '2024-12-01 00:00:00'
    AND (event = 'page')
),
ev_add_to_cart AS (
  SELECT canonical_id, ts AS event_time, cookie_id, customer_id, event, url, category, ts
  FROM rows_web_events
  WHERE canonical_id IS NOT NULL
    AND ts <= TIMESTAMP '2024-12-01 00:00:00'
    AND ts > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days'
    AND (event = 'add_to_cart')
),
ev_checkout AS (
  SELECT canonical_id, ts AS event_time, cookie_id, customer_id, event, url, category, ts
  FROM rows_web_events
  WHERE canonical_id IS NOT NULL
    AND ts <= TIMESTAMP '2024-12-01 00:00:00'
    AND ts > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days'
    AND (event = 'checkout')
),
agg_17_count_distinct AS (
  SELECT canonical_id, count(*) AS agg_17
  FROM (
    SELECT canonical_id, category AS v
    FROM ev_page_view
    WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' AND category IS NOT NULL
    GROUP BY canonical_id, category
  ) distinct_values
  GROUP BY canonical_id
),
agg_20_mode AS (
  SELECT canonical_id, first_value(v ORDER BY n DESC, v ASC) AS agg_20
  FROM (
      SELECT canonical_id, category AS v, count(*) AS n
      FROM ev_page_view
    WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' AND category IS NOT NULL
      GROUP BY canonical_id, category
  ) counted
  GROUP BY canonical_id
),
agg_22_count_distinct AS (
  SELECT canonical_id, count(*) AS agg_22
  FROM (
    SELECT canonical_id, cookie_id AS v
    FROM ev_page_view
    WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '90 days' AND cookie_id IS NOT NULL
    GROUP BY canonical_id, cookie_id
  ) distinct_values
  GROUP BY canonical_id
),
aggs_purchase AS (
  SELECT canonical_id,
         count(*) AS agg_0,
         count(*) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days') AS agg_1,
         count(*) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' AND (amount > 100)) AS agg_2,
         sum(amount) AS agg_3,
         sum(amount) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days') AS agg_4,
         avg(CAST(amount AS DOUBLE)) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days') AS agg_6,
         min(amount) AS agg_7,
         max(amount) AS agg_8,
         count(*) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' AND (amount > 50)) AS agg_23,
         count(*) FILTER (WHERE (CAST(order_ts AS DATE) = DATE '2024-11-29')) AS agg_24,
         first_value(order_ts ORDER BY event_time ASC, order_ts ASC) AS agg_9,
         first_value(order_ts ORDER BY event_time DESC, order_ts DESC) AS agg_10,
         array_slice(array_agg(order_id ORDER BY event_time ASC, order_id ASC), 1, 3) AS agg_11
  FROM ev_purchase
  GROUP BY canonical_id
),
aggs_refund AS (
  SELECT canonical_id,
         sum(amount) AS agg_5
  FROM ev_refund
  GROUP BY canonical_id
),
aggs_order_attempt AS (
  SELECT canonical_id,
         count(*) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '90 days' AND (status = 'cancelled')) AS agg_12,
         count(*) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '90 days') AS agg_13
  FROM ev_order_attempt
  GROUP BY canonical_id
),
aggs_page_view AS (
  SELECT canonical_id,
         count(*) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '43200 seconds') AS agg_14,
         count(*) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '7 days') AS agg_15,
         approx_distinct(url) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days') AS agg_18,
         max(ts) AS agg_21,
         array_slice(array_agg(category ORDER BY event_time DESC, category DESC), 1, 5) AS agg_19
  FROM ev_page_view
  GROUP BY canonical_id
),
aggs_add_to_cart AS (
  SELECT canonical_id,
         count(*) FILTER (WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '14 days') AS agg_16
  FROM ev_add_to_cart
  GROUP BY canonical_id
),
seq_0_members AS (
  SELECT DISTINCT e0.canonical_id
  FROM ev_add_to_cart e0
  WHERE e0.event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '7 days'
    AND e0.event_time + INTERVAL '1 days' <= TIMESTAMP '2024-12-01 00:00:00'
    AND NOT EXISTS (
      SELECT 1 FROM ev_purchase e1
      WHERE e1.canonical_id = e0.canonical_id
        AND e1.event_time > e0.event_time
        AND e1.event_time <= e0.event_time + INTERVAL '1 days'
    )
),
seq_1_members AS (
  -- proposal 4: each step a semi-join (EXISTS) on the one before, inner steps first, and a later
  -- step's events pruned to the window of the first (they happen after it): no per-profile cross
  -- product of all carts and purchases
  SELECT DISTINCT e0.canonical_id
  FROM ev_page_view e0
  WHERE (e0.category = 'shoes')
    AND e0.event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days'
    AND EXISTS (
      SELECT 1 FROM ev_add_to_cart e1
      WHERE e1.canonical_id = e0.canonical_id
        AND e1.event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days'
        AND e1.event_time > e0.event_time
        AND e1.event_time <= e0.event_time + INTERVAL '1800 seconds'
        AND EXISTS (
          SELECT 1 FROM ev_purchase e2
          WHERE e2.canonical_id = e1.canonical_id
            AND e2.event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days'
            AND e2.event_time > e1.event_time
            AND e2.event_time <= e1.event_time + INTERVAL '1 days'
        )
    )
),
seq_2_members AS (
  SELECT DISTINCT e0.canonical_id
  FROM ev_add_to_cart e0
  WHERE e0.event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days'
    AND EXISTS (
      SELECT 1 FROM ev_checkout e1
      WHERE e1.canonical_id = e0.canonical_id
        AND e1.event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days'
        AND e1.event_time > e0.event_time
        AND e1.event_time <= e0.event_time + INTERVAL '90 seconds'
    )
),
attrs AS (
  SELECT canonical_id,
         first_value(lower(trim(email)) ORDER BY signup_at DESC NULLS LAST, lower(trim(email)) DESC) FILTER (WHERE email IS NOT NULL) AS contact_email,
         first_value(country ORDER BY signup_at DESC NULLS LAST, country DESC) FILTER (WHERE country IS NOT NULL) AS country,
         first_value(birth_date ORDER BY signup_at DESC NULLS LAST, birth_date DESC) FILTER (WHERE birth_date IS NOT NULL) AS birth_date,
         min(signup_at) AS signup_at
  FROM rows_customers
  WHERE canonical_id IS NOT NULL
  GROUP BY canonical_id
),
layer_0 AS (
  SELECT p.canonical_id,
         COALESCE(b_0.agg_0, 0) AS agg_0,
         COALESCE(b_0.agg_1, 0) AS agg_1,
         COALESCE(b_0.agg_2, 0) AS agg_2,
         COALESCE(b_0.agg_3, 0) AS agg_3,
         COALESCE(b_0.agg_4, 0) AS agg_4,
         COALESCE(b_1.agg_5, 0) AS agg_5,
         b_0.agg_6 AS agg_6,
         b_0.agg_7 AS agg_7,
         b_0.agg_8 AS agg_8,
         b_0.agg_9 AS agg_9,
         b_0.agg_10 AS agg_10,
         COALESCE(b_0.agg_11, CAST([] AS BIGINT[])) AS agg_11,
         COALESCE(b_2.agg_12, 0) AS agg_12,
         COALESCE(b_2.agg_13, 0) AS agg_13,
         COALESCE(b_3.agg_14, 0) AS agg_14,
         COALESCE(b_3.agg_15, 0) AS agg_15,
         COALESCE(b_4.agg_16, 0) AS agg_16,
         COALESCE(x_17.agg_17, 0) AS agg_17,
         COALESCE(b_3.agg_18, 0) AS agg_18,
         COALESCE(b_3.agg_19, CAST([] AS VARCHAR[])) AS agg_19,
         x_20.agg_20 AS agg_20,
         b_3.agg_21 AS agg_21,
         COALESCE(x_22.agg_22, 0) AS agg_22,
         COALESCE(b_0.agg_23, 0) AS agg_23,
         COALESCE(b_0.agg_24, 0) AS agg_24,
         (s_0.canonical_id IS NOT NULL) AS seq_0,
         (s_1.canonical_id IS NOT NULL) AS seq_1,
         (s_2.canonical_id IS NOT NULL) AS seq_2,
         a.contact_email,
         a.country,
         a.birth_date,
         a.signup_at
  FROM profiles p
  LEFT JOIN agg_17_count_distinct x_17 ON x_17.canonical_id = p.canonical_id
  LEFT JOIN agg_20_mode x_20 ON x_20.canonical_id = p.canonical_id
  LEFT JOIN agg_22_count_distinct x_22 ON x_22.canonical_id = p.canonical_id
  LEFT JOIN aggs_purchase b_0 ON b_0.canonical_id = p.canonical_id
  LEFT JOIN aggs_refund b_1 ON b_1.canonical_id = p.canonical_id
  LEFT JOIN aggs_order_attempt b_2 ON b_2.canonical_id = p.canonical_id
  LEFT JOIN aggs_page_view b_3 ON b_3.canonical_id = p.canonical_id
  LEFT JOIN aggs_add_to_cart b_4 ON b_4.canonical_id = p.canonical_id
  LEFT JOIN attrs a ON a.canonical_id = p.canonical_id
  LEFT JOIN seq_0_members s_0 ON s_0.canonical_id = p.canonical_id
  LEFT JOIN seq_1_members s_1 ON s_1.canonical_id = p.canonical_id
  LEFT JOIN seq_2_members s_2 ON s_2.canonical_id = p.canonical_id
),
layer_1 AS (
  SELECT l.*,
         agg_0 AS orders_total,
         agg_1 AS orders_30d,
         agg_2 AS big_orders_30d,
         agg_3 AS lifetime_value,
         agg_4 AS revenue_30d,
         agg_5 AS refunded_total,
         agg_6 AS avg_order_value_30d,
         agg_7 AS smallest_order,
         agg_8 AS largest_order,
         agg_9 AS first_order_at,
         agg_10 AS last_purchase_at,
         agg_11 AS first_order_ids,
         COALESCE(CAST(agg_12 AS DOUBLE) / NULLIF(CAST(agg_13 AS DOUBLE), 0), 0) AS cancel_rate_90d,
         agg_14 AS page_views_12h,
         agg_15 AS page_views_7d,
         agg_16 AS cart_adds_2w,
         agg_17 AS categories_30d,
         agg_18 AS pages_30d_approx,
         agg_19 AS recent_categories,
         agg_20 AS favorite_category,
         agg_21 AS last_seen_at,
         agg_22 AS devices_90d,
         CAST(EXTRACT(YEAR FROM CAST(TIMESTAMP '2024-12-01 00:00:00' AS DATE)) - EXTRACT(YEAR FROM birth_date) - CASE WHEN EXTRACT(MONTH FROM CAST(TIMESTAMP '2024-12-01 00:00:00' AS DATE)) < EXTRACT(MONTH FROM birth_date) OR (EXTRACT(MONTH FROM CAST(TIMESTAMP '2024-12-01 00:00:00' AS DATE)) = EXTRACT(MONTH FROM birth_date) AND EXTRACT(DAY FROM CAST(TIMESTAMP '2024-12-01 00:00:00' AS DATE)) < EXTRACT(DAY FROM birth_date)) THEN 1 ELSE 0 END AS BIGINT) AS age,
         COALESCE((agg_23 >= 2), FALSE) AS repeat_buyers_30d,
         COALESCE((agg_24 >= 1), FALSE) AS black_friday_buyers,
         COALESCE(((signup_at > (TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '7 days')) AND (signup_at <= TIMESTAMP '2024-12-01 00:00:00')), FALSE) AS new_customers,
         COALESCE((CAST(floor((CAST(date_part('epoch', CAST(TIMESTAMP '2024-12-01 00:00:00' AS TIMESTAMP)) AS DOUBLE) - CAST(date_part('epoch', CAST(signup_at AS TIMESTAMP)) AS DOUBLE)) / 86400) AS BIGINT) % NULLIF(365, 0) >= 358), FALSE) AS signup_anniversary,
         COALESCE((country IS NULL), FALSE) AS unknown_country,
         COALESCE((NOT ((country IN ('DE', 'AT', 'CH', 'FR', 'NL', 'BE', 'LU'))) AND (country <> 'GB')), FALSE) AS outside_delivery_area,
         COALESCE((right(contact_email, length('@gmail.com')) = '@gmail.com'), FALSE) AS gmail_users,
         COALESCE(((strpos(contact_email, '+') > 0) AND NOT ((starts_with(contact_email, '+')))), FALSE) AS plus_addressing,
         COALESCE((((contact_email ~ '^[a-z]+\.[a-z]+@') AND NOT ((contact_email ~ '@(gmail|gmx|web)\.'))) AND NOT ((strpos(contact_email, '+') > 0))), FALSE) AS firstname_lastname_emails,
         COALESCE(seq_0, FALSE) AS cart_abandoners,
         COALESCE(seq_1, FALSE) AS shoe_funnel_converters,
         COALESCE(seq_2, FALSE) AS express_shoppers
  FROM layer_0 l
),
layer_2 AS (
  SELECT l.*,
         (lifetime_value - refunded_total) AS net_value,
         CASE WHEN (orders_total > 0) THEN CAST(lifetime_value AS DOUBLE) / NULLIF(CAST(orders_total AS DOUBLE), 0) ELSE NULL END AS avg_order_value,
         CAST(floor((CAST(date_part('epoch', CAST(TIMESTAMP '2024-12-01 00:00:00' AS TIMESTAMP)) AS DOUBLE) - CAST(date_part('epoch', CAST(last_purchase_at AS TIMESTAMP)) AS DOUBLE)) / 86400) AS BIGINT) AS days_since_last_purchase,
         ((page_views_7d + (5 * cart_adds_2w)) + (20 * orders_30d)) AS engagement_score,
         COALESCE(((lifetime_value >= 500) OR (big_orders_30d >= 2)), FALSE) AS high_value,
         COALESCE(((signup_at < (TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '365 days')) AND (orders_30d >= 1)), FALSE) AS loyal_veterans,
         COALESCE(((first_order_at > TIMESTAMP '2024-11-01 00:00:00') AND (orders_total = 1)), FALSE) AS recent_first_buyers,
         COALESCE(((orders_total >= 1) AND NOT (((last_purchase_at > (TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '90 days')) AND (last_purchase_at <= TIMESTAMP '2024-12-01 00:00:00')))), FALSE) AS lapsed,
         COALESCE(((first_order_at IS NULL) AND NOT ((NOT ((first_order_ids IS NULL)) AND (cardinality(first_order_ids) > 0)))), FALSE) AS never_bought,
         COALESCE((((age >= 18) AND (age <= 29)) AND (country IN ('DE', 'AT', 'CH'))), FALSE) AS young_adults_dach,
         COALESCE(NOT (((age >= 25) AND (age <= 54))), FALSE) AS outside_core_age,
         COALESCE(((favorite_category = 'shoes') OR (array_has(recent_categories, 'shoes'))), FALSE) AS shoe_lovers,
         COALESCE((((last_seen_at > (TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '7 days')) AND (last_seen_at <= TIMESTAMP '2024-12-01 00:00:00')) AND (last_seen_at > last_purchase_at)), FALSE) AS recently_seen
  FROM layer_1 l
),
layer_3 AS (
  SELECT l.*,
         COALESCE(((high_value AND (orders_total > 5)) AND (country IN ('DE', 'AT', 'CH'))), FALSE) AS vip,
         COALESCE((((smallest_order < 20) AND (avg_order_value <= 40)) AND (favorite_category <> 'luxury')), FALSE) AS bargain_hunters,
         COALESCE(((orders_total >= 2) AND ((days_since_last_purchase >= 60) AND (days_since_last_purchase <= 180))), FALSE) AS at_risk,
         COALESCE(((page_views_12h > 3) OR (engagement_score >= 50)), FALSE) AS engaged_browsers
  FROM layer_2 l
),
layer_4 AS (
  SELECT l.*,
         COALESCE((((lapsed OR at_risk) AND ((last_seen_at > (TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '14 days')) AND (last_seen_at <= TIMESTAMP '2024-12-01 00:00:00'))) AND NOT ((outside_delivery_area OR (cancel_rate_90d >= 0.5)))), FALSE) AS winback_candidates
  FROM layer_3 l
)
SELECT *
FROM layer_4;
