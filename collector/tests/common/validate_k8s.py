"""Validates Kubernetes manifests offline: built-in kinds against the Kubernetes JSON schemas
bundled in kubernetes-validate (strict: unknown fields are errors), Prometheus Operator kinds
against the cloudcoil models generated from the Operator's CRDs (strict too: the models ignore
unknown fields, so a field the validated model does not give back is reported). A kind neither
knows fails.

usage: python validate_k8s.py FILE...   (cargo xtask test installs both into target/deploy-tools)
"""
import sys

import kubernetes_validate
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1



def dropped(given, kept, path=""):
    """Paths present in `given` but not in `kept` (what the model did not recognise)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for k, v in given.items():
            if k not in kept:
                yield f"{path}/{k}"
            else:
                yield from dropped(v, kept[k], f"{path}/{k}")
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (g, k) in enumerate(zip(given, kept)):
            yield from dropped(g, k, f"{path}/{i}")


failed = 0
count = 0
for path in sys.argv[1:]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for doc in docs:
        count += 1
        name = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            if doc.get("apiVersion") == "monitoring.coreos.com/v1":
                model = getattr(monitoring_v1, doc["kind"], None)
                if model is None:
                    raise ValueError(f"no schema for {doc['apiVersion']} {doc['kind']}")
                kept = model.model_validate(doc).model_dump(by_alias=True, exclude_unset=True, mode="json")
                unknown = list(dropped(doc, kept))
                if unknown:
                    raise ValueError(f"unknown fields {unknown}")
            else:
                kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
            print(f"valid   {name}")
        except Exception as e:  # every failure is reported, then the exit status says it
            failed += 1
            where = "/".join(str(p) for p in getattr(e, "absolute_path", []))
            print(f"INVALID {name}: {getattr(e, 'message', e)}" + (f" (at {where})" if where else ""))
if count == 0:
    print("no Kubernetes objects found")
    failed += 1
sys.exit(1 if failed else 0)
