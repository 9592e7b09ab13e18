"""Teams and owners (issue: fair scheduling): every job has a team and an owner, an operator
acts only on its own team's jobs, and admins set each team's share and GPU quotas."""

from __future__ import annotations

import pytest

from api import create_app
from api.auth import parse_tokens
from tests.helpers import Api, error_of, job_of, make_settings

ALICE = "alice-token"  # operator of team nlp
BOB = "bob-token"  # operator of team vision
PLAIN = "plain-token"  # operator that names no team: team default
VIEW = "view-token"
ROOT = "root-token"  # admin, of team ops
TOKENS = (f"nlp/alice:operator:{ALICE},vision/bob:operator:{BOB},operator:{PLAIN},"
          f"viewer:{VIEW},ops/root:admin:{ROOT}")  # fmt: skip


@pytest.fixture
def teams_api(database_url, engine) -> Api:
    settings = make_settings(database_url, api_tokens=TOKENS)
    return Api(create_app(settings, engine=engine, background=False).test_client())


def test_tokens_name_their_team_and_default_to_the_default_team():
    alice, bob, plain, view, root = parse_tokens(TOKENS)
    assert (alice.team, alice.name, alice.role) == ("nlp", "alice", "operator")
    assert (bob.team, bob.actor) == ("vision", "bob")
    assert (plain.team, plain.name, plain.actor) == ("default", None, "operator")
    assert view.team == "default" and root.team == "ops"
    for bad in ("bad team/x:operator:t", "nlp/:operator:t", "/x:operator:t"):
        with pytest.raises(ValueError, match="team/name") as error:
            parse_tokens(bad)
        assert ":t" not in str(error.value)  # no secret in the message


def test_a_job_belongs_to_its_submitters_team_and_names_its_owner(teams_api):
    api = teams_api
    mine = api.submit(token=ALICE)
    assert (mine["team"], mine["owner"]) == ("nlp", "alice")
    plain = api.submit(token=PLAIN)
    assert (plain["team"], plain["owner"]) == ("default", "operator")
    # The body may name the team the token already has; only an admin names another.
    assert api.submit(token=ALICE, team="nlp")["team"] == "nlp"
    elsewhere = {"name": "x", "kind": "train", "team": "vision"}
    error = error_of(api.post("/api/training", token=ALICE, json=elsewhere), 403)
    assert error["details"] == {"team": "nlp", "job_team": "vision"}
    for_them = api.submit(token=ROOT, team="vision")
    assert (for_them["team"], for_them["owner"]) == ("vision", "root")
    assert api.submit(token=ROOT)["team"] == "ops"
    error_of(api.post("/api/training", token=ALICE,
                      json={"name": "x", "kind": "train", "team": "no spaces"}), 400)  # fmt: skip


@pytest.mark.parametrize(
    ("action", "body"),
    [("force-start", {}), ("pause", {}), ("cancel", {}), ("mark-failed", {"reason": "r"}),
     ("release", {})],
)  # fmt: skip
def test_an_operator_acts_only_on_its_own_teams_jobs(teams_api, action, body):
    api = teams_api
    theirs = api.submit(token=BOB, hold=True)
    error = error_of(api.act(theirs["id"], action, body, token=ALICE), 403, "forbidden")
    assert error["details"]["job_team"] == "vision" and error["details"]["team"] == "nlp"
    assert api.job(theirs["id"])["status"] == "pending"  # nothing happened
    assert api.act(theirs["id"], action, body, token=BOB).status_code in (200, 202)


def test_patch_and_retry_are_team_bound_too_and_admins_act_on_every_team(teams_api):
    api = teams_api
    theirs = api.submit(token=BOB)
    error_of(api.patch(f"/api/training/{theirs['id']}", token=ALICE, json={"priority": 90}), 403)
    error_of(api.patch(f"/api/training/{theirs['id']}", token=PLAIN, json={"priority": 90}), 403)
    assert api.job(theirs["id"])["priority"] == 50
    patched = job_of(api.patch(f"/api/training/{theirs['id']}", token=ROOT,
                               json={"priority": 90}), 200)  # fmt: skip
    assert patched["priority"] == 90
    job_of(api.act(theirs["id"], "cancel", {}, token=ROOT), 200)
    error_of(api.act(theirs["id"], "retry", {}, token=ALICE), 403)
    assert job_of(api.act(theirs["id"], "retry", {}, token=BOB), 200)["status"] == "queued"


def test_viewers_read_every_team_and_lists_filter_by_team(teams_api):
    api = teams_api
    a = api.submit(token=ALICE)
    b = api.submit(token=BOB)
    assert api.job(b["id"])["team"] == "vision"  # a viewer reads any team's job
    page = api.get("/api/training", query={"team": "nlp"}, token=VIEW).get_json()
    assert [j["id"] for j in page["items"]] == [a["id"]]
    everything = api.get("/api/training", token=VIEW).get_json()["items"]
    assert {j["id"] for j in everything} == {a["id"], b["id"]}


def test_admins_set_teams_shares_and_quotas(teams_api):
    api = teams_api
    assert api.get("/api/teams", token=VIEW).get_json() == {"items": []}
    body = {"share": 2, "quota_gpus": {"a100": 16, "v100": None}}
    error_of(api.put("/api/teams/nlp", token=ALICE, json=body), 403, "forbidden")
    created = team_of(api.put("/api/teams/nlp", token=ROOT, json=body))
    assert (created["share"], created["quota_gpus"]) == (2.0, {"a100": 16, "v100": None})
    changed = team_of(api.put("/api/teams/nlp", token=ROOT, json={"share": 0.5}))
    assert (changed["share"], changed["quota_gpus"]) == (0.5, {})
    assert changed["created_at"] == created["created_at"]
    assert changed["updated_at"] >= created["updated_at"]
    team_of(api.put("/api/teams/vision", token=ROOT, json={}))
    listed = api.get("/api/teams", token=VIEW).get_json()["items"]
    assert [(t["name"], t["share"]) for t in listed] == [("nlp", 0.5), ("vision", 1.0)]


@pytest.mark.parametrize(
    "body",
    [{"share": 0}, {"share": -1}, {"share": "2"}, {"share": True}, {"quota_gpus": {"a100": -1}},
     {"quota_gpus": {"no spaces": 1}}, {"quota_gpus": {"a100": 1.5}}, {"weight": 1}, []],
)  # fmt: skip
def test_team_bodies_are_validated(teams_api, body):
    error_of(teams_api.put("/api/teams/nlp", token=ROOT, json=body), 400)
    assert teams_api.get("/api/teams", token=VIEW).get_json() == {"items": []}


def test_a_team_name_in_the_path_is_validated(teams_api):
    error_of(teams_api.put("/api/teams/bad%20name", token=ROOT, json={}), 400, "invalid")


def team_of(response) -> dict:
    assert response.status_code == 200, response.get_json()
    return response.get_json()
