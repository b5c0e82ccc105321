# Shared fixtures for the par.* policy tests (a *_test.rego file, so production never loads it).
package par.testlib

import rego.v1

# 2027-01-15T08:00:00Z
now := 1800000000000000000

sec := 1000000000

restart_wf := "[DogBank] Auto-Restart Transaction Service"

scale_wf := "[DogBank] Auto-Scale PIX Worker"

pix_monitor := "[DogBank] PIX - Alta Latencia P99"

lag_monitor := "[DogBank] Kafka - Consumer Lag Alto"

user(roles) := {"type": "user", "id": "alice", "name": "Alice", "roles": roles}

service_principal := {"type": "service", "id": "svc-1", "name": "inventory", "roles": []}

workflow(name) := {"type": "workflow", "id": "wf-1", "name": name, "roles": []}

manual := {"type": "manual", "monitor_id": null, "monitor_name": null, "workflow_id": null, "workflow_name": null}

monitor(name) := {"type": "monitor", "monitor_id": "m-1", "monitor_name": name, "workflow_id": "wf-1", "workflow_name": null}

# The catalog facts the runner passes for each action (mirrors config/credentials/script.yaml).
info := {
	"restart_transaction_service": {"category": "restart", "services": ["transaction-service"], "replicas": null, "timeout_s": 120},
	"restart_pix_worker": {"category": "restart", "services": ["pix-worker"], "replicas": null, "timeout_s": 120},
	"scale_pix_worker_1": {"category": "scale", "services": ["pix-worker"], "replicas": 1, "timeout_s": 180},
	"scale_pix_worker_3": {"category": "scale", "services": ["pix-worker"], "replicas": 3, "timeout_s": 180},
	"scale_pix_worker_5": {"category": "scale", "services": ["pix-worker"], "replicas": 5, "timeout_s": 180},
	"restart_all_backend": {
		"category": "group_restart",
		"services": ["transaction-service", "pix-worker", "auth-service", "account-service"],
		"replicas": null, "timeout_s": 300,
	},
	"restart_messaging": {"category": "group_restart", "services": ["kafka", "zookeeper", "rabbitmq"], "replicas": null, "timeout_s": 300},
	"check_services_status": {"category": "diagnostic", "services": [], "replicas": null, "timeout_s": 60},
	"check_service_logs_kafka": {"category": "diagnostic", "services": ["kafka"], "replicas": null, "timeout_s": 60},
	"check_kafka_topics": {"category": "diagnostic", "services": ["kafka"], "replicas": null, "timeout_s": 60},
}

doc(action, principal, trigger, history) := {
	"action": action,
	"action_info": object.get(info, action, null),
	"parameters": {},
	"principal": principal,
	"trigger": trigger,
	"task": {"id": "task-1", "client": "test", "expires_at": null},
	"now": "2027-01-15T08:00:00.000000Z",
	"now_ns": now,
	"history": history,
	"runner": {"id": "dogbank-par"},
}

# An SRE asking by hand, with the given history.
sre(action, history) := doc(action, user(["sre"]), manual, history)

# A past execution `ago_s` seconds before now.
ran(action, ago_s, service) := {
	"action": action, "ts_ns": now - (ago_s * sec), "outcome": "success",
	"principal_id": "alice", "service": service,
}

ran_with(action, ago_s, service, outcome) := object.union(ran(action, ago_s, service), {"outcome": outcome})

# Does some reason start with the rule id (every denial must name its rule)?
names_rule(decision, rule) if {
	rule in decision.rule_ids
	some r in decision.reasons
	startswith(r, sprintf("%s:", [rule]))
}

api := {"type": "api", "monitor_id": null, "monitor_name": null, "workflow_id": null, "workflow_name": null}
