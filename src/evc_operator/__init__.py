"""The EphemeralVolumeClaim operator.

- `resources`: names of the API resources involved (the CRD lives in config/crd/).
- `settings`: the operator's configuration from the environment.
- `claims`: the PersistentVolumeClaim an EVC asks for (pure).
- `kube`: the one module that talks to the Kubernetes API.
- `handlers`: the Kopf handlers, thin: read events, decide, apply through `kube`.
"""
