"""Reading the platform's connector list: connector, authentication entry and Properties of an install."""

from __future__ import annotations

import pytest

from reconciler.errors import PlanError
from reconciler.platforms.cyclr.connectors import install_request, resolve_connector, slug

ADO = {
    "Id": 310, "Name": "Microsoft Azure DevOps", "Version": "2.0",
    "Authentication": [
        {"Id": 1, "AuthName": "Entra Token (recommended)", "AuthType": "OAuth2", "OAuth2Type": "AuthorisationCode"},
        {"Id": 2, "AuthName": "Azure DevOps OAuth app (being retired)", "AuthType": "OAuth2"},
    ],
    "Parameters": [
        {"Id": 11, "TargetName": "Organization", "IsAccountConnectorProperty": True, "IsOptional": False},
        {"Id": 12, "TargetName": "Project", "IsAccountConnectorProperty": True, "IsOptional": True},
        {"Id": 13, "TargetName": "Scopes", "IsAccountConnectorProperty": True, "IsOptional": False},
        {"Id": 14, "TargetName": "ClientId", "IsAccountConnectorProperty": True, "IsOptional": True},
        {"Id": 15, "TargetName": "Region", "IsAccountConnectorProperty": False},
    ],
}
OLD_ADO = {**ADO, "Id": 200, "Version": "1.10"}
SLACK = {
    "Id": 77, "Name": "Slack", "Version": "1.0",
    "Authentication": [{"Id": 5, "AuthName": "OAuth", "AuthType": "OAuth2"}],
    "Parameters": [{"Id": 21, "TargetName": "Channel Name", "IsAccountConnectorProperty": True,
                    "Values": ["general", "alerts"]}],
}
LISTED = [OLD_ADO, ADO, SLACK]


def test_connector_names_are_slugs_and_the_newest_version_wins() -> None:
    assert slug("Microsoft Azure DevOps") == "microsoft-azure-devops"
    connector = resolve_connector("microsoft-azure-devops", [ADO, {**ADO, "Id": 9, "Version": "10.0"}, OLD_ADO])
    assert (connector.id, connector.version) == ("9", "10.0")


def test_an_unknown_connector_gets_a_did_you_mean_from_the_platforms_list() -> None:
    with pytest.raises(PlanError) as caught:
        resolve_connector("microsoft-azure-devop", LISTED)
    assert "did you mean 'microsoft-azure-devops'" in str(caught.value.hint)


@pytest.mark.parametrize(("flavour", "expected"), [("entra-id", "1"), ("azure-devops-oauth", "2")])
def test_the_auth_flavour_picks_the_authentication_entry(flavour: str, expected: str) -> None:
    request = install_request(resolve_connector("microsoft-azure-devops", LISTED), flavour=flavour,
                              parameters={"organization": "acme-org"}, scopes=["vso.code"])
    assert request.authentication_id == expected


def test_a_pinned_authentication_wins_and_ambiguity_lists_the_entries() -> None:
    connector = resolve_connector("microsoft-azure-devops", LISTED)
    assert connector.authentication("entra-id", "Azure DevOps OAuth app (being retired)")["Id"] == 2
    assert connector.authentication(None, "1")["Id"] == 1
    with pytest.raises(PlanError) as caught:
        connector.authentication(None)
    assert "Entra Token (recommended) (Id 1)" in caught.value.message and "authentication:" in str(caught.value.hint)


def test_parameters_scopes_and_client_become_properties() -> None:
    request = install_request(
        resolve_connector("microsoft-azure-devops", LISTED), flavour="entra-id",
        parameters={"organization": "acme-org", "project": "Platform"}, scopes=["vso.work_full", "vso.code"],
        client=("app-id", "app-secret-value"),
    )
    assert request.properties == (
        {"Name": "Organization", "Value": "acme-org", "Id": "11"},
        {"Name": "Project", "Value": "Platform", "Id": "12"},
        {"Name": "Scopes", "Value": "vso.work_full vso.code", "Id": "13"},
        {"Name": "ClientId", "Value": "app-id"},
        {"Name": "ClientSecret", "Value": "app-secret-value"},
    )
    assert "app-secret-value" not in repr(request)


@pytest.mark.parametrize(
    ("parameters", "scopes", "message", "hint"),
    [
        ({"organisation": "x"}, ["vso.code"], "no parameter 'organisation'", "did you mean 'organization'"),
        ({"region": "eu"}, ["vso.code"], "no parameter 'region'", "it takes: organization, project"),
        ({"project": "p"}, ["vso.code"], "needs parameter 'organization'", "declare it"),
        ({"organization": "x"}, [], "needs scopes", "declare it"),
    ],
)
def test_parameter_mistakes_are_plan_errors(parameters: dict[str, str], scopes: list[str], message: str,
                                            hint: str) -> None:
    with pytest.raises(PlanError) as caught:
        install_request(resolve_connector("microsoft-azure-devops", LISTED), flavour="entra-id",
                        parameters=parameters, scopes=scopes)
    assert message in caught.value.message and hint in str(caught.value.hint)


def test_a_connector_without_scopes_takes_its_own_parameters() -> None:
    slack = resolve_connector("slack", LISTED)
    request = install_request(slack, flavour=None, parameters={"channel-name": "alerts"}, scopes=[])
    assert request.authentication_id == "5"
    assert request.properties == ({"Name": "Channel Name", "Value": "alerts", "Id": "21"},)
    with pytest.raises(PlanError, match="takes no scopes"):
        install_request(slack, flavour=None, parameters={"channel-name": "alerts"}, scopes=["chat:write"])
    with pytest.raises(PlanError) as caught:
        install_request(slack, flavour=None, parameters={"channel-name": "random"}, scopes=[])
    assert "general, alerts" in str(caught.value.hint)
