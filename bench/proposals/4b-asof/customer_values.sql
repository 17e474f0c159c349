-- proposal 4b (with 1, 2, 3): sequences with ASOF joins (seq_1_tail, seq_1_members, seq_2_members).
-- proposal 3: first, last, first_k, last_k, mode and `latest by` attributes as
-- aggregates (arg_min / arg_max / min_by(…, k) / max_by(…, k) over (time, value)) in the behavior's
-- GROUP BY instead of ROW_NUMBER windows (a sort of every event per profile); the attributes of a
-- source in one GROUP BY.
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
  SELECT k0.canonical_id AS canonical_id, s.order_id, s.customer_id, s.amount, s.status, s.order_ts
  FROM orders s
  LEFT JOIN customer_identity k0 ON k0.key_name = 'customer_id' AND k0.key_value = upper(trim(s.customer_id))
  WHERE s.order_ts <= TIMESTAMP '2024-12-01 00:00:00'
),
rows_web_events AS (
  SELECT COALESCE(k0.canonical_id, k1.canonical_id) AS canonical_id, s.cookie_id, s.customer_id, s.event, s.url, s.category, s.ts
  FROM web_events s
  LEFT JOIN customer_identity k0 ON k0.key_name = 'customer_id' AND k0.key_value = upper(trim(s.customer_id))
  LEFT JOIN customer_identity k1 ON k1.key_name = 'cookie_id' AND k1.key_value = s.cookie_id
  WHERE s.ts <= TIMESTAMP '2024-12-01 00:00:00'
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
    AND (event = 'add_to_cart')
),
ev_checkout AS (
  SELECT canonical_id, ts AS event_time, cookie_id, customer_id, event, url, category, ts
  FROM rows_web_events
  WHERE canonical_id IS NOT NULL
    AND ts <= TIMESTAMP '2024-12-01 00:00:00'
    AND (event = 'checkout')
),
agg_20_mode AS (
  SELECT canonical_id, arg_min(v, {'n': -n, 'v': v}) AS agg_20
  FROM (
      SELECT canonical_id, category AS v, count(*) AS n
      FROM ev_page_view
    WHERE event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' AND category IS NOT NULL
      GROUP BY canonical_id, category
  ) counted
  GROUP BY canonical_id
),
aggs_purchase AS (
  SELECT canonical_id,
         count(*) AS agg_0,
         count(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' THEN 1 END) AS agg_1,
         count(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' AND (amount > 100) THEN 1 END) AS agg_2,
         sum(amount) AS agg_3,
         sum(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' THEN amount END) AS agg_4,
         avg(CAST(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' THEN amount END AS DOUBLE)) AS agg_6,
         min(amount) AS agg_7,
         max(amount) AS agg_8,
         count(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' AND (amount > 50) THEN 1 END) AS agg_23,
         count(CASE WHEN (CAST(order_ts AS DATE) = DATE '2024-11-29') THEN 1 END) AS agg_24,
         arg_min(order_ts, {'t': event_time, 'v': order_ts}) AS agg_9,
         arg_max(order_ts, {'t': event_time, 'v': order_ts}) AS agg_10,
         min_by(order_id, {'t': event_time, 'v': order_id}, 3) AS agg_11
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
         count(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '90 days' AND (status = 'cancelled') THEN 1 END) AS agg_12,
         count(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '90 days' THEN 1 END) AS agg_13
  FROM ev_order_attempt
  GROUP BY canonical_id
),
aggs_page_view AS (
  SELECT canonical_id,
         count(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '43200 seconds' THEN 1 END) AS agg_14,
         count(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '7 days' THEN 1 END) AS agg_15,
         count(DISTINCT CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' THEN category END) AS agg_17,
         approx_count_distinct(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days' THEN url END) AS agg_18,
         max(ts) AS agg_21,
         count(DISTINCT CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '90 days' THEN cookie_id END) AS agg_22,
         max_by(category, {'t': event_time, 'v': category}, 5) AS agg_19
  FROM ev_page_view
  GROUP BY canonical_id
),
aggs_add_to_cart AS (
  SELECT canonical_id,
         count(CASE WHEN event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '14 days' THEN 1 END) AS agg_16
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
seq_1_tail AS (
  -- proposal 4b: DuckDB's ASOF JOIN finds the first next event of a step; within the step's time
  -- limit, the sequence goes on. Carts followed by a purchase within a day:
  SELECT e1.canonical_id, e1.event_time
  FROM ev_add_to_cart e1
  ASOF JOIN ev_purchase e2 ON e2.canonical_id = e1.canonical_id AND e2.event_time > e1.event_time
  WHERE e1.event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days'
    AND e2.event_time <= e1.event_time + INTERVAL '1 days'
),
seq_1_members AS (
  SELECT DISTINCT e0.canonical_id
  FROM ev_page_view e0
  ASOF JOIN seq_1_tail e1 ON e1.canonical_id = e0.canonical_id AND e1.event_time > e0.event_time
  WHERE (e0.category = 'shoes')
    AND e0.event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days'
    AND e1.event_time <= e0.event_time + INTERVAL '1800 seconds'
),
seq_2_members AS (
  SELECT DISTINCT e0.canonical_id
  FROM ev_add_to_cart e0
  ASOF JOIN ev_checkout e1 ON e1.canonical_id = e0.canonical_id AND e1.event_time > e0.event_time
  WHERE e0.event_time > TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '30 days'
    AND e1.event_time <= e0.event_time + INTERVAL '90 seconds'
),
attrs AS (
  -- latest by signup_at (ties: the greatest value), nulls skipped; earliest signup_at
  SELECT canonical_id,
         arg_max(lower(trim(email)), {'t': signup_at, 'v': lower(trim(email))}) AS contact_email,
         arg_max(country, {'t': signup_at, 'v': country}) AS country,
         arg_max(birth_date, {'t': signup_at, 'v': birth_date}) AS birth_date,
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
         COALESCE(b_3.agg_17, 0) AS agg_17,
         COALESCE(b_3.agg_18, 0) AS agg_18,
         COALESCE(b_3.agg_19, CAST([] AS VARCHAR[])) AS agg_19,
         x_20.agg_20 AS agg_20,
         b_3.agg_21 AS agg_21,
         COALESCE(b_3.agg_22, 0) AS agg_22,
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
  LEFT JOIN agg_20_mode x_20 ON x_20.canonical_id = p.canonical_id
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
         COALESCE((CAST(floor((epoch(CAST(TIMESTAMP '2024-12-01 00:00:00' AS TIMESTAMP)) - epoch(CAST(signup_at AS TIMESTAMP))) / 86400) AS BIGINT) % NULLIF(365, 0) >= 358), FALSE) AS signup_anniversary,
         COALESCE((country IS NULL), FALSE) AS unknown_country,
         COALESCE((NOT ((country IN ('DE', 'AT', 'CH', 'FR', 'NL', 'BE', 'LU'))) AND (country <> 'GB')), FALSE) AS outside_delivery_area,
         COALESCE((ends_with(contact_email, '@gmail.com')), FALSE) AS gmail_users,
         COALESCE(((strpos(contact_email, '+') > 0) AND NOT ((starts_with(contact_email, '+')))), FALSE) AS plus_addressing,
         COALESCE((((regexp_matches(contact_email, '^[a-z]+\.[a-z]+@')) AND NOT ((regexp_matches(contact_email, '@(gmail|gmx|web)\.')))) AND NOT ((strpos(contact_email, '+') > 0))), FALSE) AS firstname_lastname_emails,
         COALESCE(seq_0, FALSE) AS cart_abandoners,
         COALESCE(seq_1, FALSE) AS shoe_funnel_converters,
         COALESCE(seq_2, FALSE) AS express_shoppers
  FROM layer_0 l
),
layer_2 AS (
  SELECT l.*,
         (lifetime_value - refunded_total) AS net_value,
         CASE WHEN (orders_total > 0) THEN CAST(lifetime_value AS DOUBLE) / NULLIF(CAST(orders_total AS DOUBLE), 0) ELSE NULL END AS avg_order_value,
         CAST(floor((epoch(CAST(TIMESTAMP '2024-12-01 00:00:00' AS TIMESTAMP)) - epoch(CAST(last_purchase_at AS TIMESTAMP))) / 86400) AS BIGINT) AS days_since_last_purchase,
         ((page_views_7d + (5 * cart_adds_2w)) + (20 * orders_30d)) AS engagement_score,
         COALESCE(((lifetime_value >= 500) OR (big_orders_30d >= 2)), FALSE) AS high_value,
         COALESCE(((signup_at < (TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '365 days')) AND (orders_30d >= 1)), FALSE) AS loyal_veterans,
         COALESCE(((first_order_at > TIMESTAMP '2024-11-01 00:00:00') AND (orders_total = 1)), FALSE) AS recent_first_buyers,
         COALESCE(((orders_total >= 1) AND NOT (((last_purchase_at > (TIMESTAMP '2024-12-01 00:00:00' - INTERVAL '90 days')) AND (last_purchase_at <= TIMESTAMP '2024-12-01 00:00:00')))), FALSE) AS lapsed,
         COALESCE(((first_order_at IS NULL) AND NOT ((NOT ((first_order_ids IS NULL)) AND (len(first_order_ids) > 0)))), FALSE) AS never_bought,
         COALESCE((((age >= 18) AND (age <= 29)) AND (country IN ('DE', 'AT', 'CH'))), FALSE) AS young_adults_dach,
         COALESCE(NOT (((age >= 25) AND (age <= 54))), FALSE) AS outside_core_age,
         COALESCE(((favorite_category = 'shoes') OR (list_contains(recent_categories, 'shoes'))), FALSE) AS shoe_lovers,
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
FROM layer_4