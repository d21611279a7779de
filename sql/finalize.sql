-- pgauth finalize: privileges on the generated functions. Runs after every function exists.
-- Password functions are what an application role needs, so PUBLIC keeps EXECUTE on them
-- (PostgreSQL's default). Policy reads go through SECURITY DEFINER functions with a pinned
-- search_path; the policy table itself is pgauth_admin's.
SELECT 1;
