"""The job lifecycle, pure: the JobState every flow and the simulator give the policy, the plans
for placing, recovering and moving a job, and the ledger rows those steps write."""
