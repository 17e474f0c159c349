-- bench/project (the features, attributes and segments of examples/retail that the generator's data
-- can answer), written by hand for DuckDB as of T = 2024-12-01 00:00:00.
-- Tables: customers, orders, web_events (bench/gen_data.py). Outputs: hw_profiles (one row per
-- profile, keyed by `label`), hw_segments (label, segment), hw_identity (every identifier with
-- its profile's label).
--
-- Statements end with ';' at the end of a line. duckdb_bench.py runs them in order; the
-- statements between `-- @loop converged: <query>` and `-- @end` run again until <query> gives 0.
--
-- Identity, as the retail example defines it: identifiers are upper(trim(customer_id)),
-- lower(trim(email)) (not '', 'null', 'test@example.com') and cookie_id of every row visible at
-- T (customers: all rows; orders and web events: time <= T). A row links the identifiers it
-- holds; a customer id keeps its links to at most 2 emails and 10 cookies, the ones seen first
-- (ties: smallest value). A profile is a connected component; its label is the smallest integer
-- id of its identifiers. An event belongs to the profile of its strongest identifier
-- (customer_id before cookie_id).

-- every identifier with an integer id
CREATE TABLE hw_ids AS
WITH ids AS (
  SELECT 'customer_id' AS k, upper(trim(customer_id)) AS v FROM customers
  UNION
  SELECT 'email', lower(trim(email)) FROM customers
  WHERE lower(trim(email)) NOT IN ('', 'null', 'test@example.com')
  UNION
  SELECT 'customer_id', upper(trim(customer_id)) FROM orders
  WHERE order_ts <= TIMESTAMP '2024-12-01 00:00:00'
  UNION
  SELECT 'customer_id', upper(trim(customer_id)) FROM web_events
  WHERE ts <= TIMESTAMP '2024-12-01 00:00:00' AND customer_id IS NOT NULL
  UNION
  SELECT 'cookie_id', cookie_id FROM web_events
  WHERE ts <= TIMESTAMP '2024-12-01 00:00:00'
)
SELECT k, v, CAST(row_number() OVER () AS INTEGER) AS id FROM ids;

-- links between a customer id and an email or cookie seen in one row, within the limits
CREATE TABLE hw_edges AS
WITH links AS (
  SELECT upper(trim(customer_id)) AS c, 'email' AS k, lower(trim(email)) AS v,
         TIMESTAMP '1900-01-01 00:00:00' AS seen
  FROM customers
  WHERE lower(trim(email)) NOT IN ('', 'null', 'test@example.com')
  UNION ALL
  SELECT upper(trim(customer_id)), 'cookie_id', cookie_id, min(ts)
  FROM web_events
  WHERE ts <= TIMESTAMP '2024-12-01 00:00:00' AND customer_id IS NOT NULL
  GROUP BY ALL
),
kept AS (
  SELECT c, k, v FROM links
  QUALIFY row_number() OVER (PARTITION BY c, k ORDER BY seen, v) <= CASE k WHEN 'email' THEN 2 ELSE 10 END
)
SELECT a.id AS a, b.id AS b
FROM kept
JOIN hw_ids a ON a.k = 'customer_id' AND a.v = kept.c
JOIN hw_ids b ON b.k = kept.k AND b.v = kept.v;

-- connected components: every identifier takes the smallest label among itself and its
-- neighbours, then the label of that label, until no label changes
CREATE TABLE hw_labels AS SELECT id, id AS label FROM hw_ids;

-- @loop converged: SELECT count(*) FROM hw_labels n JOIN hw_labels_prev p USING (id) WHERE n.label <> p.label
DROP TABLE IF EXISTS hw_labels_prev;
ALTER TABLE hw_labels RENAME TO hw_labels_prev;
CREATE TABLE hw_labels AS
WITH heard AS (
  SELECT e.a AS id, l.label FROM hw_edges e JOIN hw_labels_prev l ON l.id = e.b
  UNION ALL
  SELECT e.b, l.label FROM hw_edges e JOIN hw_labels_prev l ON l.id = e.a
),
lowest AS (SELECT id, min(label) AS label FROM heard GROUP BY id),
stepped AS (
  SELECT l.id, least(l.label, coalesce(h.label, l.label)) AS label
  FROM hw_labels_prev l LEFT JOIN lowest h USING (id)
)
-- then every identifier jumps to its label's label (fewer rounds on long paths)
SELECT s.id, least(s.label, j.label) AS label FROM stepped s JOIN stepped j ON j.id = s.label;
-- @end

CREATE TABLE hw_identity AS
SELECT i.k, i.v, l.label FROM hw_ids i JOIN hw_labels l USING (id);

-- features, attributes and sequences per profile
CREATE TABLE hw_profiles AS
WITH customer_label AS (
  SELECT v AS customer_id, label FROM hw_identity WHERE k = 'customer_id'
),
cookie_label AS (
  SELECT v AS cookie_id, label FROM hw_identity WHERE k = 'cookie_id'
),
ord AS (
  SELECT c.label, o.order_id, o.amount, o.status, o.order_ts
  FROM orders o JOIN customer_label c ON c.customer_id = upper(trim(o.customer_id))
  WHERE o.order_ts <= TIMESTAMP '2024-12-01 00:00:00'
),
web AS (
  SELECT coalesce(c.label, k.label) AS label, w.event, w.url, w.category, w.cookie_id, w.ts
  FROM web_events w
  LEFT JOIN customer_label c ON c.customer_id = upper(trim(w.customer_id))
  LEFT JOIN cookie_label k ON k.cookie_id = w.cookie_id
  WHERE w.ts <= TIMESTAMP '2024-12-01 00:00:00'
),
-- windows are (T - w, T]: T - 12h = 2024-11-30 12:00, T - 7d = 11-24, T - 2w = 11-17,
-- T - 30d = 11-01, T - 90d = 09-02
purchases AS (
  SELECT label,
         count(*) AS orders_total,
         count(*) FILTER (WHERE order_ts > TIMESTAMP '2024-11-01 00:00:00') AS orders_30d,
         count(*) FILTER (WHERE order_ts > TIMESTAMP '2024-11-01 00:00:00' AND amount > 100) AS big_orders_30d,
         count(*) FILTER (WHERE order_ts > TIMESTAMP '2024-11-01 00:00:00' AND amount > 50) AS over_50_30d,
         count(*) FILTER (WHERE CAST(order_ts AS DATE) = DATE '2024-11-29') AS black_friday_orders,
         sum(amount) AS lifetime_value,
         sum(amount) FILTER (WHERE order_ts > TIMESTAMP '2024-11-01 00:00:00') AS revenue_30d,
         avg(amount) FILTER (WHERE order_ts > TIMESTAMP '2024-11-01 00:00:00') AS avg_order_value_30d,
         min(amount) AS smallest_order,
         max(amount) AS largest_order,
         min(order_ts) AS first_order_at,
         max(order_ts) AS last_purchase_at,
         min_by(order_id, {'t': order_ts, 'id': order_id}, 3) AS first_order_ids
  FROM ord WHERE status = 'completed'
  GROUP BY label
),
attempts AS (
  SELECT label,
         sum(amount) FILTER (WHERE status = 'refunded') AS refunded_total,
         count(*) FILTER (WHERE order_ts > TIMESTAMP '2024-09-02 00:00:00' AND status = 'cancelled') AS cancelled_90d,
         count(*) FILTER (WHERE order_ts > TIMESTAMP '2024-09-02 00:00:00') AS attempts_90d
  FROM ord
  GROUP BY label
),
views AS (
  SELECT label,
         count(*) FILTER (WHERE ts > TIMESTAMP '2024-11-30 12:00:00') AS page_views_12h,
         count(*) FILTER (WHERE ts > TIMESTAMP '2024-11-24 00:00:00') AS page_views_7d,
         count(DISTINCT category) FILTER (WHERE ts > TIMESTAMP '2024-11-01 00:00:00') AS categories_30d,
         approx_count_distinct(url) FILTER (WHERE ts > TIMESTAMP '2024-11-01 00:00:00') AS pages_30d_approx,
         count(DISTINCT cookie_id) FILTER (WHERE ts > TIMESTAMP '2024-09-02 00:00:00') AS devices_90d,
         max_by(category, {'t': ts, 'c': category}, 5) AS recent_categories,
         max(ts) AS last_seen_at
  FROM web WHERE event = 'page'
  GROUP BY label
),
favorite AS (
  -- the most viewed category in 30 days; ties: the smallest name
  SELECT label, min_by(category, {'n': -n, 'c': category}) AS favorite_category
  FROM (
    SELECT label, category, count(*) AS n FROM web
    WHERE event = 'page' AND ts > TIMESTAMP '2024-11-01 00:00:00'
    GROUP BY label, category
  ) counted
  GROUP BY label
),
carts AS (
  SELECT label, count(*) AS cart_adds_2w FROM web
  WHERE event = 'add_to_cart' AND ts > TIMESTAMP '2024-11-17 00:00:00'
  GROUP BY label
),
-- sequences, all within the last 30 days: each add to cart with the first purchase and the first
-- checkout after it, each shoe page view with the first add to cart after it that was bought
-- within a day
recent_purchases AS (
  SELECT label, order_ts AS ts FROM ord
  WHERE status = 'completed' AND order_ts > TIMESTAMP '2024-11-01 00:00:00'
),
recent_web AS (
  SELECT label, event, ts FROM web
  WHERE ts > TIMESTAMP '2024-11-01 00:00:00'
    AND (event IN ('add_to_cart', 'checkout') OR (event = 'page' AND category = 'shoes'))
),
cart_next AS (
  SELECT c.label, c.ts, p.ts AS purchase_ts, k.ts AS checkout_ts
  FROM (SELECT label, ts FROM recent_web WHERE event = 'add_to_cart') c
  ASOF LEFT JOIN recent_purchases p ON p.label = c.label AND p.ts > c.ts
  ASOF LEFT JOIN (SELECT label, ts FROM recent_web WHERE event = 'checkout') k
    ON k.label = c.label AND k.ts > c.ts
),
shoe_next AS (
  SELECT s.label, s.ts, c.ts AS cart_ts
  FROM (SELECT label, ts FROM recent_web WHERE event = 'page') s
  ASOF LEFT JOIN (SELECT label, ts FROM cart_next WHERE purchase_ts <= ts + INTERVAL '1 day') c
    ON c.label = s.label AND c.ts > s.ts
),
sequences AS (
  SELECT label,
         bool_or(ts > TIMESTAMP '2024-11-24 00:00:00' AND ts <= TIMESTAMP '2024-11-30 00:00:00'
                 AND (purchase_ts IS NULL OR purchase_ts > ts + INTERVAL '1 day')) AS cart_abandoners,
         bool_or(checkout_ts <= ts + INTERVAL '90 seconds') AS express_shoppers,
         false AS shoe_funnel_converters
  FROM cart_next GROUP BY label
  UNION ALL
  SELECT DISTINCT label, false, false, true FROM shoe_next WHERE cart_ts <= ts + INTERVAL '30 minutes'
),
attributes AS (
  -- customers has no time column: every row is visible; latest by signup_at (ties: the
  -- greatest value), null values skipped
  SELECT c.label,
         max_by(lower(trim(s.email)), {'t': s.signup_at, 'v': lower(trim(s.email))}) AS contact_email,
         max_by(s.country, {'t': s.signup_at, 'v': s.country}) AS country,
         max_by(s.birth_date, {'t': s.signup_at, 'v': s.birth_date}) AS birth_date,
         min(s.signup_at) AS signup_at
  FROM customers s JOIN customer_label c ON c.customer_id = upper(trim(s.customer_id))
  GROUP BY c.label
),
profiles AS (SELECT DISTINCT label FROM hw_identity)
SELECT p.label,
       a.contact_email, a.country, a.birth_date,
       date_sub('year', a.birth_date, DATE '2024-12-01') AS age,
       a.signup_at,
       coalesce(b.orders_total, 0) AS orders_total,
       coalesce(b.orders_30d, 0) AS orders_30d,
       coalesce(b.big_orders_30d, 0) AS big_orders_30d,
       coalesce(b.lifetime_value, 0) AS lifetime_value,
       coalesce(b.revenue_30d, 0) AS revenue_30d,
       coalesce(t.refunded_total, 0) AS refunded_total,
       coalesce(b.lifetime_value, 0) - coalesce(t.refunded_total, 0) AS net_value,
       b.lifetime_value / b.orders_total AS avg_order_value,
       b.avg_order_value_30d,
       b.smallest_order,
       b.largest_order,
       b.first_order_at,
       b.last_purchase_at,
       CAST(floor((epoch(TIMESTAMP '2024-12-01 00:00:00') - epoch(b.last_purchase_at)) / 86400) AS BIGINT) AS days_since_last_purchase,
       coalesce(b.first_order_ids, []) AS first_order_ids,
       coalesce(t.cancelled_90d / nullif(t.attempts_90d, 0), 0) AS cancel_rate_90d,
       coalesce(v.page_views_12h, 0) AS page_views_12h,
       coalesce(v.page_views_7d, 0) AS page_views_7d,
       coalesce(c.cart_adds_2w, 0) AS cart_adds_2w,
       coalesce(v.categories_30d, 0) AS categories_30d,
       coalesce(v.pages_30d_approx, 0) AS pages_30d_approx,
       coalesce(v.recent_categories, []) AS recent_categories,
       f.favorite_category,
       v.last_seen_at,
       coalesce(v.devices_90d, 0) AS devices_90d,
       coalesce(v.page_views_7d, 0) + 5 * coalesce(c.cart_adds_2w, 0) + 20 * coalesce(b.orders_30d, 0) AS engagement_score,
       -- for the segments
       coalesce(b.over_50_30d, 0) AS over_50_30d,
       coalesce(b.black_friday_orders, 0) AS black_friday_orders,
       coalesce(s.cart_abandoners, false) AS cart_abandoners,
       coalesce(s.express_shoppers, false) AS express_shoppers,
       coalesce(s.shoe_funnel_converters, false) AS shoe_funnel_converters
FROM profiles p
LEFT JOIN attributes a USING (label)
LEFT JOIN purchases b USING (label)
LEFT JOIN attempts t USING (label)
LEFT JOIN views v USING (label)
LEFT JOIN favorite f USING (label)
LEFT JOIN carts c USING (label)
LEFT JOIN (SELECT label, bool_or(cart_abandoners) AS cart_abandoners, bool_or(express_shoppers) AS express_shoppers,
                  bool_or(shoe_funnel_converters) AS shoe_funnel_converters
           FROM sequences GROUP BY label) s USING (label);

-- segment memberships: the conditions of bench/project/segments.cdp (unknown counts as false)
CREATE TABLE hw_segments AS
WITH flags AS (
  SELECT *,
         lifetime_value >= 500 OR big_orders_30d >= 2 AS high_value,
         orders_total >= 1 AND NOT coalesce(last_purchase_at > TIMESTAMP '2024-09-02 00:00:00', false) AS lapsed,
         coalesce(orders_total >= 2 AND days_since_last_purchase BETWEEN 60 AND 180, false) AS at_risk,
         coalesce(country NOT IN ('DE', 'AT', 'CH', 'FR', 'NL', 'BE', 'LU', 'GB'), false) AS outside_delivery_area,
         CAST(floor((epoch(TIMESTAMP '2024-12-01 00:00:00') - epoch(signup_at)) / 86400) AS BIGINT) AS signup_days
  FROM hw_profiles
),
members AS (
  UNPIVOT (
    SELECT label,
           high_value,
           coalesce(high_value AND orders_total > 5 AND country IN ('DE', 'AT', 'CH'), false) AS vip,
           over_50_30d >= 2 AS repeat_buyers_30d,
           coalesce(smallest_order < 20 AND avg_order_value <= 40 AND favorite_category <> 'luxury', false) AS bargain_hunters,
           black_friday_orders >= 1 AS black_friday_buyers,
           coalesce(signup_at > TIMESTAMP '2024-11-24 00:00:00' AND signup_at <= TIMESTAMP '2024-12-01 00:00:00', false) AS new_customers,
           coalesce(signup_at < TIMESTAMP '2023-12-02 00:00:00' AND orders_30d >= 1, false) AS loyal_veterans,
           coalesce(first_order_at > TIMESTAMP '2024-11-01 00:00:00' AND orders_total = 1, false) AS recent_first_buyers,
           at_risk,
           lapsed,
           orders_total = 0 AS never_bought,
           coalesce(signup_days % 365 >= 358, false) AS signup_anniversary,
           coalesce(age BETWEEN 18 AND 29 AND country IN ('DE', 'AT', 'CH'), false) AS young_adults_dach,
           coalesce(NOT (age BETWEEN 25 AND 54), false) AS outside_core_age,
           country IS NULL AS unknown_country,
           outside_delivery_area,
           coalesce(ends_with(contact_email, '@gmail.com'), false) AS gmail_users,
           coalesce(contains(contact_email, '+') AND NOT starts_with(contact_email, '+'), false) AS plus_addressing,
           coalesce(regexp_matches(contact_email, '^[a-z]+\.[a-z]+@')
                    AND NOT regexp_matches(contact_email, '@(gmail|gmx|web)\.')
                    AND NOT contains(contact_email, '+'), false) AS firstname_lastname_emails,
           page_views_12h > 3 OR engagement_score >= 50 AS engaged_browsers,
           coalesce(favorite_category = 'shoes', false) OR list_contains(recent_categories, 'shoes') AS shoe_lovers,
           coalesce(last_seen_at > TIMESTAMP '2024-11-24 00:00:00' AND last_seen_at > last_purchase_at, false) AS recently_seen,
           cart_abandoners,
           shoe_funnel_converters,
           express_shoppers,
           coalesce((lapsed OR at_risk) AND last_seen_at > TIMESTAMP '2024-11-17 00:00:00'
                    AND NOT (outside_delivery_area OR cancel_rate_90d >= 0.5), false) AS winback_candidates
    FROM flags
  ) ON COLUMNS(* EXCLUDE (label)) INTO NAME segment VALUE member
)
SELECT label, segment FROM members WHERE member;
