"""Transform template.yaml as CloudFormation's SAM transform would; prints the result as JSON.

Run by the SAM tests with .venv-sam's python (samtranslator ships with aws-sam-cli). Local code
paths become S3 URIs first, as `sam package` makes them."""

import json
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """The translator asks IAM for managed policy ARNs only for policies named by name."""

    def load(self) -> dict[str, str]:
        return {}


def main(path: str) -> None:
    with open(path, encoding="utf-8") as fh:
        template = yaml_parse(fh.read())
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        for uri in ("CodeUri", "ContentUri"):
            if isinstance(props.get(uri), str):
                props[uri] = f"s3://artefacts/{props[uri].strip('/')}.zip"
    pseudo = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}
    json.dump(transform(template, pseudo, NoManagedPolicies()), sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv[1])
