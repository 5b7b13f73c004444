"""The EphemeralVolumeClaim operator. One concern per module:

Pure decisions (no API, no clock):
- `lifecycle`: phases, deadlines, and which recorded facts to trust.
- `users`: which pods use a claim. `claims`: the PVC an EVC asks for.
- `status`: status, conditions (PvcReady among them) and Events.
- `evc`: reading an EVC. `settings`: configuration. `timestamps`: UTC time text.

Applying them:
- `handlers`: the Kopf handlers, thin; they wire the rest together. `kopffeed`: claims'
  events from Kopf's watch straight to them. `kopfmemory`: no Kopf memory per claim.
- `scheduler`: drives work queue -> per-claim reconcile -> outcome.
- `workqueue`: dedupe, delays, retries with backoff, forgetting a key.
- `reconcile`: one claim: read its facts, decide, apply, return an outcome.
- `pvcsync`: a claim's PVC made to match it (never one not the operator's).
- `freshness`: when a view of a namespace's pods may be deleted on.
- `proof`: how a namespace's users are proven current (a consistent read, then the informer
  or a short watch); `barrier`: those short watches, opened a second ahead of deadlines.
- `tracked`: one record per tracked claim. `seams`: what a reconcile needs, as Protocols.
- `informer`: one kind of object kept current (list + watch) as projections; `watched`:
  the users (pods, workloads) and PVCs of the namespaces with claims; `clusterwide`: each
  workload kind watched once for the cluster where every namespace is served.
- `kube`: the only module that calls the API; `errors`: its typed errors;
  `credentials`: how it logs in.
- `leadership`: the Lease. `metrics`: Prometheus and readiness.
- `access`: the permissions it needs, checked up front; Kopf's forbidden retries told once.
- `countdowns`: the countdown log. `memory`: freed memory back to the system.
  `collector`: Python's garbage collector, kept from stalling the loop.
- `resources`: names of the API resources involved (the CRD lives in config/crd/).
"""
