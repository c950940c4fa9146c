-- spotshift ledger: plans, workloads (one per instance a job ran on), migrations (moves between workloads).
-- Jobs live in the job store (MongoDB), so job_id is a plain key here, indexed but not a foreign key.
-- Row-level security: the service role (the orchestrator) writes, authenticated users read.

create table if not exists public.plans (
    id                   text primary key,
    job_id               text not null,
    instance_type        text not null,
    region               text not null,
    zone                 text not null,
    market               text not null check (market in ('spot', 'on_demand')),
    usd_per_hour         double precision not null check (usd_per_hour >= 0),
    expected_hours       double precision not null check (expected_hours >= 0),
    expected_cost_usd    double precision not null check (expected_cost_usd >= 0),
    deadline_slack_hours double precision not null,
    reason               text not null default '',
    offer                jsonb not null,
    alternatives         jsonb not null default '[]'::jsonb,
    created_at           timestamptz not null
);
create index if not exists plans_job_id_created_at_idx on public.plans (job_id, created_at);

create table if not exists public.workloads (
    id             text primary key,
    job_id         text not null,
    plan_id        text references public.plans (id) on delete set null,
    instance_id    text,
    instance_type  text not null,
    region         text not null,
    zone           text not null,
    market         text not null check (market in ('spot', 'on_demand')),
    usd_per_hour   double precision not null check (usd_per_hour >= 0),
    started_at     timestamptz not null,
    ended_at       timestamptz,
    billed_seconds double precision check (billed_seconds >= 0),
    end_reason     text check (end_reason in ('completed', 'preempted', 'migrated', 'failed', 'cancelled', 'stalled', 'reaped')),
    check (ended_at is null or ended_at >= started_at)
);
create index if not exists workloads_job_id_started_at_idx on public.workloads (job_id, started_at);
create index if not exists workloads_open_idx on public.workloads (job_id) where ended_at is null;
create index if not exists workloads_plan_id_idx on public.workloads (plan_id);

create table if not exists public.migrations (
    id                  text primary key,
    job_id              text not null,
    from_workload_id    text not null references public.workloads (id) on delete cascade,
    to_workload_id      text references public.workloads (id) on delete set null,
    reason              text not null check (reason in ('preempted', 'cheaper', 'deadline', 'stalled', 'manual')),
    expected_saving_usd double precision not null default 0,
    checkpoint_step     integer check (checkpoint_step >= 0),
    downtime_seconds    double precision check (downtime_seconds >= 0),
    started_at          timestamptz not null,
    finished_at         timestamptz,
    succeeded           boolean,
    check (to_workload_id is null or to_workload_id <> from_workload_id)
);
create index if not exists migrations_job_id_started_at_idx on public.migrations (job_id, started_at);
create index if not exists migrations_from_workload_idx on public.migrations (from_workload_id);
create index if not exists migrations_to_workload_idx on public.migrations (to_workload_id);

alter table public.plans enable row level security;
alter table public.workloads enable row level security;
alter table public.migrations enable row level security;

grant select on public.plans, public.workloads, public.migrations to authenticated;
grant select, insert, update, delete on public.plans, public.workloads, public.migrations to service_role;

create policy plans_service_role_writes on public.plans
    for all to service_role using (true) with check (true);
create policy plans_authenticated_reads on public.plans
    for select to authenticated using (true);
create policy workloads_service_role_writes on public.workloads
    for all to service_role using (true) with check (true);
create policy workloads_authenticated_reads on public.workloads
    for select to authenticated using (true);
create policy migrations_service_role_writes on public.migrations
    for all to service_role using (true) with check (true);
create policy migrations_authenticated_reads on public.migrations
    for select to authenticated using (true);
