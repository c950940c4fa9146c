-- A migration is a persisted state machine (spotshift.lifecycle.migration): its row says where it stands.
-- Rows written before this get their state from how they ended (succeeded -> recorded, failed ->
-- rolled_back, still in flight -> requested), as spotshift.models.Migration reads a row without one.
-- Safe to run again: the backfill runs only when the column is added.

do $$
begin
    if not exists (select 1 from information_schema.columns
                   where table_schema = 'public' and table_name = 'migrations' and column_name = 'state') then
        alter table public.migrations add column state text not null default 'requested';
        update public.migrations
           set state = case when succeeded then 'recorded' when not succeeded then 'rolled_back' else 'requested' end;
    end if;
end
$$;

alter table public.migrations drop constraint if exists migrations_state_check;
alter table public.migrations add constraint migrations_state_check check (state in (
    'requested', 'checkpointed', 'launched', 'first_step_seen', 'old_stopped', 'recorded', 'abandoned', 'rolled_back'));
