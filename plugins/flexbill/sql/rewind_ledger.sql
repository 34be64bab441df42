-- rewind_ledger: before a billing date's invoices are published again, move each
-- contract's cursor back to the first period its live lines on that date held (a
-- draft replaced or a finalized invoice credited makes them owed again; the
-- publish moves the cursors of what it bills forward)
-- | reads billed_periods, invoices | writes contract_ledger
update contract_ledger
set billed_before = d.first_start
from (
    select
        b.contract_id,
        min(b.period_start) as first_start
    from billed_periods as b
    inner join invoices as i on i.invoice_id = b.invoice_id
    where i.billing_date = :billing_date
    group by b.contract_id
) as d
where
    d.contract_id = contract_ledger.contract_id
    and d.first_start < contract_ledger.billed_before
