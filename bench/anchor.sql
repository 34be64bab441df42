-- anchor: the invoice lines flexbill publishes for billing date :billing_date, as ONE hand-written set-based
-- PostgreSQL statement (the benchmark's yardstick; bench/run.py checks set equality with flexbill's lines).
--
-- It follows CONTRACT.md: the world as of the cutoff (:billing_date + 1 day, 00:00 UTC); bad rows and the
-- rows depending on them are left out (what flexbill quarantines); the automatic rules' suspend events not yet
-- recorded count as if appended (numbered after the log, signup then plan then crm_stage, as flexbill appends
-- them); a customer archived before the cutoff or suspended at it is invoiced nothing; the owed periods start
-- on or before D, on or after next_invoice_date, before the cancellation date, and have no line on another
-- billing date (a line of D itself is a previous run of D, which the run replaces).
-- Periods: anniversary steps from start_date (PostgreSQL's date + interval 'n months' clamps to the month's
-- end, as the contract wants), or billing day B with a short prorated first period against the step ending
-- at the first day-B date; weekly plans step 7 x weeks days. amount = unit x quantity x days / full-step days,
-- rounded half-up to cents (round() on a positive numeric rounds half away from zero).
-- D is cast(:billing_date as date) and the cutoff D + 1 (a date compared with timestamps: D+1 00:00), written
-- inline rather than in a CTE so that the planner estimates every filter with the real values.
with loc as not materialized (  -- valid locations
    select l.id, l.currency, l.keep_new_accounts_suspended_since as signup_since
    from locations as l
    where l.currency ~ '^[A-Z]{3}$' and l.tax_rate between 0 and 1
),

visible_customers as not materialized (
    select c.*
    from customers as c
    where c.created_at < (cast(:billing_date as date) + 1)
),

cust as not materialized (  -- valid customers: visible, of a valid location
    select c.id, c.created_at, c.archived_at, loc.currency, loc.signup_since
    from visible_customers as c
    inner join loc on loc.id = c.location_id
),

pl as not materialized (  -- valid plans: of a valid location, in its currency, non-negative price, exactly one step kind
    select
        p.id, p.price, p.currency, p.invoice_every_months as months, p.invoice_every_weeks as weeks,
        p.suspend_customers_joining_since as plan_since
    from plans as p
    inner join loc on loc.id = p.location_id
    where
        p.price >= 0 and p.currency = loc.currency
        and p.invoice_every_months >= 0 and p.invoice_every_weeks >= 0
        and (p.invoice_every_months > 0) <> (p.invoice_every_weeks > 0)
),

con as not materialized (  -- valid contracts, visible at the cutoff
    select
        k.id, k.customer_id, k.quantity, coalesce(k.price, pl.price) as unit_price, k.start_date,
        k.billing_day, k.cancellation_date, k.next_invoice_date, k.created_at, pl.months, pl.weeks,
        pl.plan_since, cust.archived_at
    from contracts as k
    inner join cust on cust.id = k.customer_id
    inner join pl on pl.id = k.plan_id
        where
        k.created_at < (cast(:billing_date as date) + 1)
        and k.quantity >= 1
        and (k.price is null or k.price >= 0)
        and pl.currency = cust.currency
        and (k.billing_day is null or (k.billing_day between 1 and 28 and pl.weeks = 0))
        and (k.cancellation_date is null or k.cancellation_date >= k.start_date)
),

stage as not materialized (  -- valid CRM stages (of a board of a valid location) that deactivate accounts
    select s.id, s.deactivate_account_since as crm_since
    from crm_stages as s
    inner join crm_boards as b on b.id = s.board_id
    inner join loc on loc.id = b.location_id
    where s.deactivate_account_since is not null
),

triggered as (  -- the rules' suspend events owed at the cutoff and not yet recorded, in flexbill's append order
    select t.customer_id, t.at, t.rule, t.trigger_key
    from (
        select c.id as customer_id, c.created_at as at, 1 as rule, 'signup:' || c.id as trigger_key
        from cust as c
        where c.created_at >= c.signup_since
        union all
        select k.customer_id, k.created_at, 2, 'plan:' || k.id
        from con as k
        where k.created_at >= k.plan_since
        union all
        select e.customer_id, e.entered_at, 3, 'crm_stage:' || e.id
        from crm_stage_entries as e
        inner join stage as s on s.id = e.stage_id
        inner join cust as c on c.id = e.customer_id
                where e.entered_at < (cast(:billing_date as date) + 1) and e.entered_at >= s.crm_since
    ) as t
    where not exists (select 1 from suspension_events as r where r.trigger_key = t.trigger_key)
),

events as (  -- valid events before the cutoff, the owed rule events numbered after every recorded one
    select e.customer_id, e.occurred_at, cast(e.id as bigint) as seq, e.action
    from suspension_events as e
    inner join visible_customers as c on c.id = e.customer_id
        where
        e.occurred_at < (cast(:billing_date as date) + 1)
        and e.action in ('suspend', 'lift')
        and e.source in ('manual', 'signup', 'plan', 'crm_stage')
        and (e.action = 'suspend' or e.source = 'manual')
    union all
    select
        t.customer_id, t.at, 1000000000000 + row_number() over (order by t.rule, t.at, t.trigger_key), 'suspend'
    from triggered as t
),

suspended as materialized (  -- customers whose latest event before the cutoff is a suspend
    select s.customer_id
    from (
        select distinct on (e.customer_id) e.customer_id, e.action
        from events as e
        order by e.customer_id, e.occurred_at desc, e.seq desc
    ) as s
    where s.action = 'suspend'
),

grid as (  -- billable contracts with owed periods possible: window [lo, hi], anchor `first` of the step grid
    select
        k.id, k.quantity, k.unit_price, k.start_date, k.cancellation_date, k.months, k.weeks,
        greatest(k.start_date, coalesce(k.next_invoice_date, k.start_date)) as lo,
        least(cast(:billing_date as date), coalesce(k.cancellation_date - 1, cast(:billing_date as date))) as hi,
        case
            when k.weeks = 0 and k.billing_day is not null and extract(day from k.start_date) <> k.billing_day
                then cast(
                    date_trunc('month', k.start_date)
                    + (case when extract(day from k.start_date) > k.billing_day then 1 else 0 end) * interval '1 month'
                    + (k.billing_day - 1) * interval '1 day' as date)
            else k.start_date
        end as first
    from con as k
        where
        (k.archived_at is null or k.archived_at >= (cast(:billing_date as date) + 1))
        and not exists (select 1 from suspended as s where s.customer_id = k.customer_id)
        and greatest(k.start_date, coalesce(k.next_invoice_date, k.start_date)) <= cast(:billing_date as date)
        and (k.cancellation_date is null or greatest(k.start_date, coalesce(k.next_invoice_date, k.start_date)) < k.cancellation_date)
),

steps as (  -- the candidate step indexes k of each window (at most one too many at each end, filtered below)
    select
        g.*,
        case
            when g.weeks > 0 then ceil((g.lo - g.first) / (7.0 * g.weeks))
            else ceil(((extract(year from g.lo) - extract(year from g.first)) * 12
                       + extract(month from g.lo) - extract(month from g.first)) / g.months)
        end as k_lo,
        case
            when g.weeks > 0 then floor((g.hi - g.first) / (7.0 * g.weeks))
            else floor(((extract(year from g.hi) - extract(year from g.first)) * 12
                        + extract(month from g.hi) - extract(month from g.first)) / g.months)
        end as k_hi
    from grid as g
),

bounds as (  -- period k runs from boundary k to boundary k + 1
    select
        s.id, s.quantity, s.unit_price, s.cancellation_date, s.lo, s.hi,
        case when s.weeks > 0 then s.first + cast(7 * s.weeks * k as integer)
             else cast(s.first + make_interval(months => cast(s.months * k as integer)) as date) end as b0,
        case when s.weeks > 0 then s.first + cast(7 * s.weeks * (k + 1) as integer)
             else cast(s.first + make_interval(months => cast(s.months * (k + 1) as integer)) as date) end as b1
    from steps as s
    cross join lateral generate_series(cast(greatest(s.k_lo, 0) as bigint), cast(s.k_hi as bigint)) as k
),

periods as (
    select b.id, b.quantity, b.unit_price, b.b0 as period_start, least(b.b1, b.cancellation_date) as period_end,
           b.b1 - b.b0 as full_days
    from bounds as b
    where b.b0 between b.lo and b.hi
    union all  -- the short first period of a billing-day contract, against the step ending at `first`
    select g.id, g.quantity, g.unit_price, g.start_date, least(g.first, g.cancellation_date),
           g.first - cast(g.first - make_interval(months => g.months) as date)
    from grid as g
    where g.first <> g.start_date and g.start_date between g.lo and g.hi
)

select
    p.id as contract_id,
    p.period_start,
    p.period_end,
    p.quantity,
    p.unit_price,
    round(p.unit_price * p.quantity * (p.period_end - p.period_start) / p.full_days, 2) as amount,
    (p.period_end - p.period_start) < p.full_days as prorated
from periods as p
where not exists (
    select 1
    from invoice_lines as l
    inner join invoices as i on i.invoice_id = l.invoice_id
    where
        l.contract_id = p.id and l.period_start = p.period_start
        and i.billing_date <> cast(:billing_date as date) and i.status <> 'credited'
)
