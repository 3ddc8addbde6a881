"""The sandbox Cyclr model's records: the connector list it offers, account connectors, sign-ins under way, and
the failure every Cyclr route answers with.

Owns: those shapes and how an account connector is shown by the API (a listing, or the detail with
`Authenticated` and `Properties`, sensitive values masked). Must not: hold state or locks (`cyclr` does), or speak
HTTP (`cyclr_routes` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CALLBACK", "AccountConnector", "CyclrFailure", "SignIn", "default_connectors"]

CALLBACK = "/connector/callback"  # where the provider sends a sign-in back (the partner registers it)


class CyclrFailure(Exception):
    """An answer other than success: HTTP `status` with `{"Message": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def default_connectors() -> list[dict[str, Any]]:
    """The connector list the sandbox offers: Azure DevOps with both authentication types, and Slack."""
    ado_parameters = [
        {"Id": 101, "TargetName": "Organization", "IsAccountConnectorProperty": True, "IsOptional": False},
        {"Id": 102, "TargetName": "Project", "IsAccountConnectorProperty": True, "IsOptional": True},
        {"Id": 103, "TargetName": "Scopes", "IsAccountConnectorProperty": True, "IsOptional": False},
        {"Id": 104, "TargetName": "ClientId", "IsAccountConnectorProperty": True, "IsOptional": True},
        {"Id": 105, "TargetName": "ClientSecret", "IsAccountConnectorProperty": True, "IsOptional": True,
         "IsSensitive": True},
    ]
    return [
        {
            "Id": 310, "Name": "Microsoft Azure DevOps", "Version": "1.0",
            "Authentication": [
                {"Id": 31, "AuthName": "Entra Token (recommended)", "AuthType": "OAuth2",
                 "OAuth2Type": "AuthorisationCode"},
                {"Id": 32, "AuthName": "Azure DevOps OAuth app (being retired)", "AuthType": "OAuth2",
                 "OAuth2Type": "AuthorisationCode"},
            ],
            "Parameters": ado_parameters,
        },
        {
            "Id": 420, "Name": "Slack", "Version": "1.0",
            "Authentication": [{"Id": 41, "AuthName": "OAuth", "AuthType": "OAuth2"}],
            "Parameters": [{"Id": 201, "TargetName": "Channel", "IsAccountConnectorProperty": True,
                            "IsOptional": True}],
        },
    ]


@dataclass
class AccountConnector:
    id: int
    account: str
    connector: dict[str, Any]
    name: str
    description: str
    authentication_id: int | None
    properties: dict[str, str] = field(default_factory=dict)
    authenticated: bool = False
    auth_value: str | None = None

    def public(self, *, detail: bool) -> dict[str, Any]:
        listed: dict[str, Any] = {
            "Id": self.id,
            "Name": self.name,
            "Description": self.description,
            "Connector": {"Id": self.connector["Id"], "Name": self.connector["Name"],
                          "Version": self.connector["Version"]},
        }
        if detail:
            listed["Authenticated"] = self.authenticated
            listed["AuthenticationId"] = self.authentication_id
            listed["Properties"] = [
                {"Name": name, "Value": "********" if name == "ClientSecret" else value}
                for name, value in sorted(self.properties.items())
            ]
        return listed


@dataclass
class SignIn:
    """A sign-in under way: the browser is at the provider's consent page."""

    connector: AccountConnector
    target_origin: str
    verifier: str
    client: tuple[str, str]
    flavour: str
    redirect_uri: str
