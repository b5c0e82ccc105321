package par.authz_test

import rego.v1

import data.par.testlib as t

allowed_cases := {
	"sre restarts a service": t.sre("restart_pix_worker", []),
	"sre scales": t.sre("scale_pix_worker_3", []),
	"sre runs a check": t.sre("check_kafka_topics", []),
	"developer runs a check": t.doc("check_service_logs_kafka", t.user(["developer"]), t.manual, []),
	"platform-admin restarts all backend": t.doc("restart_all_backend", t.user(["platform-admin"]), t.manual, []),
	"platform-admin restarts messaging": t.doc("restart_messaging", t.user(["platform-admin"]), t.manual, []),
	"restart workflow from the PIX monitor": t.doc("restart_transaction_service", t.workflow(t.restart_wf), t.monitor(t.pix_monitor), []),
	"scale workflow to 1 from the lag monitor": t.doc("scale_pix_worker_1", t.workflow(t.scale_wf), t.monitor(t.lag_monitor), []),
	"scale workflow to 3 from the lag monitor": t.doc("scale_pix_worker_3", t.workflow(t.scale_wf), t.monitor(t.lag_monitor), []),
	"scale workflow to 5 from the lag monitor": t.doc("scale_pix_worker_5", t.workflow(t.scale_wf), t.monitor(t.lag_monitor), []),
	"workflow trigger naming its own workflow": t.doc(
		"restart_transaction_service", t.workflow(t.restart_wf),
		object.union(t.monitor(t.pix_monitor), {"workflow_name": t.restart_wf}), [],
	),
	"any workflow runs diagnostics": t.doc("check_services_status", t.workflow("[Other] Some Workflow"), t.manual, []),
	"service principal runs diagnostics": t.doc("check_services_status", t.service_principal, t.api, []),
	"user without roles runs diagnostics": t.doc("check_services_status", t.user([]), t.manual, []),
}

test_allowed[note] if {
	some note, inp in allowed_cases
	d := data.par.decision with input as inp
	d.allow
	count(d.reasons) > 0
	some r in d.reasons
	startswith(r, "authz.")
}

# note -> [input, rule id that must be named]
denied_cases := {
	"developer restarts": [t.doc("restart_pix_worker", t.user(["developer"]), t.manual, []), "authz.role"],
	"developer scales": [t.doc("scale_pix_worker_3", t.user(["developer"]), t.manual, []), "authz.role"],
	"sre restarts all backend": [t.sre("restart_all_backend", []), "authz.role"],
	"sre restarts messaging": [t.sre("restart_messaging", []), "authz.role"],
	"platform-admin restarts one service": [t.doc("restart_pix_worker", t.user(["platform-admin"]), t.manual, []), "authz.role"],
	"unknown role": [t.doc("restart_pix_worker", t.user(["root"]), t.manual, []), "authz.role"],
	"restart workflow scales": [t.doc("scale_pix_worker_3", t.workflow(t.restart_wf), t.monitor(t.pix_monitor), []), "authz.workflow"],
	"restart workflow restarts another service": [t.doc("restart_pix_worker", t.workflow(t.restart_wf), t.monitor(t.pix_monitor), []), "authz.workflow"],
	"restart workflow triggered by hand": [t.doc("restart_transaction_service", t.workflow(t.restart_wf), t.manual, []), "authz.workflow"],
	"restart workflow on a schedule": [t.doc("restart_transaction_service", t.workflow(t.restart_wf), object.union(t.monitor(t.pix_monitor), {"type": "schedule"}), []), "authz.workflow"],
	"restart workflow from the lag monitor": [t.doc("restart_transaction_service", t.workflow(t.restart_wf), t.monitor(t.lag_monitor), []), "authz.workflow"],
	"scale workflow from the PIX monitor": [t.doc("scale_pix_worker_3", t.workflow(t.scale_wf), t.monitor(t.pix_monitor), []), "authz.workflow"],
	"scale workflow restarts": [t.doc("restart_pix_worker", t.workflow(t.scale_wf), t.monitor(t.lag_monitor), []), "authz.workflow"],
	"unknown workflow restarts": [t.doc("restart_transaction_service", t.workflow("[DogBank] Auto-Restart Transaction Service (copy)"), t.monitor(t.pix_monitor), []), "authz.workflow"],
	"workflow trigger names another workflow": [t.doc(
		"restart_transaction_service", t.workflow(t.restart_wf),
		object.union(t.monitor(t.pix_monitor), {"workflow_name": t.scale_wf}), [],
	), "authz.workflow"],
	"workflow with an sre role": [t.doc("restart_pix_worker", object.union(t.workflow(t.scale_wf), {"roles": ["sre"]}), t.monitor(t.lag_monitor), []), "authz.workflow"],
	"service principal restarts": [t.doc("restart_pix_worker", t.service_principal, t.api, []), "authz.service"],
	"service principal with sre role": [t.doc("restart_pix_worker", object.union(t.service_principal, {"roles": ["sre"]}), t.api, []), "authz.service"],
	"user named like a workflow": [t.doc("restart_transaction_service", object.union(t.user([]), {"name": t.restart_wf}), t.monitor(t.pix_monitor), []), "authz.role"],
	"unknown principal type": [t.doc("restart_pix_worker", object.union(t.user(["sre"]), {"type": "robot"}), t.manual, []), "authz"],
	"empty principal id": [t.doc("check_services_status", object.union(t.user(["sre"]), {"id": ""}), t.manual, []), "authz.role"],
}

test_denied[note] if {
	some note, c in denied_cases
	d := data.par.decision with input as c[0]
	not d.allow
	t.names_rule(d, c[1])
}

test_workflow_deny_names_the_required_monitor if {
	d := data.par.decision with input as t.doc("restart_transaction_service", t.workflow(t.restart_wf), t.manual, [])
	some r in d.reasons
	contains(r, "only when triggered by monitor \"[DogBank] PIX - Alta Latencia P99\"")
}

test_roles_come_from_data if {
	d := data.par.decision with input as t.doc("restart_pix_worker", t.user(["oncall"]), t.manual, [])
		with data.dogbank.roles.oncall as {"categories": ["restart"]}
	d.allow
	"authz.role.oncall" in d.rule_ids
}

test_no_grant_means_deny if {
	d := data.par.decision with input as t.sre("restart_pix_worker", [])
		with data.dogbank.roles as {}
	not d.allow
}
