package par.allowlist_test

import rego.v1

import data.par.testlib as t

test_catalog_action_passes_allowlist if {
	count(data.par.allowlist.deny) == 0 with input as t.sre("restart_transaction_service", [])
}

test_unknown_action_is_denied if {
	d := data.par.decision with input as t.sre("rm_rf_everything", [])
	not d.allow
	t.names_rule(d, "allowlist")
}

test_unknown_action_is_denied_for_every_role if {
	d := data.par.decision with input as t.doc("drop_database", t.user(["sre", "platform-admin", "developer"]), t.manual, [])
	not d.allow
	t.names_rule(d, "allowlist")
}

# In the policy data but not in the runner's catalog (action_info null): denied.
test_action_missing_from_catalog_is_denied if {
	inp := object.union(t.sre("restart_pix_worker", []), {"action_info": null})
	d := data.par.decision with input as inp
	not d.allow
	t.names_rule(d, "allowlist")
	some r in d.reasons
	contains(r, "not in the runner's action catalog")
}

# In the catalog but not in the policy data: adding a command to the catalog alone is not enough.
test_action_missing_from_policy_data_is_denied if {
	inp := object.union(t.sre("restart_new_service", []), {"action_info": t.info.restart_pix_worker})
	d := data.par.decision with input as inp
	not d.allow
	t.names_rule(d, "allowlist")
}

test_category_mismatch_between_catalog_and_policy_is_denied if {
	forged := object.union(t.info.restart_all_backend, {"category": "restart"})
	inp := object.union(t.sre("restart_all_backend", []), {"action_info": forged})
	d := data.par.decision with input as inp
	not d.allow
	some r in d.reasons
	contains(r, "category \"restart\" in the catalog but \"group_restart\" in the policy data")
}

test_policy_data_can_remove_an_action if {
	d := data.par.decision with input as t.sre("restart_pix_worker", [])
		with data.dogbank.actions as {"restart_transaction_service": "restart"}
	not d.allow
	t.names_rule(d, "allowlist")
}
