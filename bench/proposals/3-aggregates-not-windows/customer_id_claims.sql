-- proposal 2: the claims of the generated statement over integer node ids; the anchor, whose MD5
-- becomes a new canonical id, is the identifier's 'key:value' string as before.
CREATE TABLE customer_id_claims AS
WITH members AS (
  SELECT n.node, n.key_name, n.key_value, n.priority, n.first_seen, c.label
  FROM customer_id_nodes n
  JOIN customer_id_cc c ON c.node = n.node
),
anchors AS (
  SELECT label, key_name || ':' || key_value AS anchor
  FROM (
    SELECT label, key_name, key_value,
           ROW_NUMBER() OVER (PARTITION BY label ORDER BY first_seen, priority, key_value) AS rn
    FROM members
  ) ranked
  WHERE rn = 1
),
previous AS (
  -- the ids the members of each profile had after the previous run
  SELECT m.label, p.canonical_id, min(m.first_seen) AS seen
  FROM members m
  JOIN customer_id_map p ON p.key_name = m.key_name AND p.key_value = m.key_value
  GROUP BY m.label, p.canonical_id
),
claimed AS (
  -- an old id stays with one profile only (after a split: the one holding its identifier seen first)
  SELECT label, canonical_id, seen
  FROM (
    SELECT pr.label, pr.canonical_id, pr.seen,
           ROW_NUMBER() OVER (PARTITION BY pr.canonical_id ORDER BY pr.seen, a.anchor) AS rn
    FROM previous pr
    JOIN anchors a ON a.label = pr.label
  ) ranked
  WHERE rn = 1
)
-- per profile: its anchor, and each old id it keeps, the one seen first surviving
SELECT a.label, a.anchor, c.canonical_id AS old_id,
       ROW_NUMBER() OVER (PARTITION BY a.label ORDER BY c.seen, c.canonical_id) AS rank_in_profile
FROM anchors a
LEFT JOIN claimed c ON c.label = a.label
