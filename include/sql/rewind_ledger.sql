-- rewind_ledger: before a billing date's lines are replaced, move each affected
-- contract's cursor back to the first period those lines held
-- | reads invoice_lines, invoices | writes contract_ledger
with date_lines as (
    select
        l.contract_id,
        min(l.period_start) as first_start
    from invoice_lines as l
    inner join invoices as i on i.invoice_id = l.invoice_id
    where i.billing_date = :billing_date
    group by l.contract_id
)

update contract_ledger
set billed_before = (
    select d.first_start from date_lines as d
    where d.contract_id = contract_ledger.contract_id
)
where contract_id in (
    select d.contract_id from date_lines as d
    where d.first_start < contract_ledger.billed_before
)
