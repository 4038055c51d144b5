"""The github route's settings as the pipelines file writes them, and how the adapter reads
GitHub's rate-limit answers (``chalicelib/adapters/github.py``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chalicelib.adapters.github import SECONDARY_LIMIT_WAIT_S, rate_limit_wait_s
from chalicelib.domain.notifications import receives, route_key
from chalicelib.domain.notify_routes import SUBSCRIBABLE, GithubSettings, Notification, SecretRef
from chalicelib.domain.pipelines import PipelinesConfigError, load_pipelines
from chalicelib.service.notification_ports import GithubRepository

PIPELINE = """
[[pipeline]]
name = "shop-prod"
bucket = "acme-artifacts"
prefix = "shop/prod/"
application = "shop"
deployment_group = "shop-prod"

[[pipeline.notify]]
kind = "github"
"""


def route_of(tmp_path: Path, settings: str) -> GithubSettings:
    path = tmp_path / "pipelines.toml"
    path.write_text(PIPELINE + settings, encoding="utf-8")
    [route] = load_pipelines(path).pipelines[0].notify
    assert isinstance(route.channel, GithubSettings)
    return route.channel


def test_a_github_route_defaults_to_github_com_the_pipeline_and_every_event(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.toml"
    path.write_text(PIPELINE + 'repository = "acme/shop"\ntoken_secret = "relco/github"\n', encoding="utf-8")
    [route] = load_pipelines(path).pipelines[0].notify
    settings = route.channel
    assert isinstance(settings, GithubSettings)
    assert settings.token == SecretRef("secretsmanager", "relco/github")
    assert (settings.base_url, settings.environment_for("shop-prod")) == (
        "https://api.github.com",
        "shop-prod",
    )
    assert route.on == SUBSCRIBABLE
    # The route's id digests the settings as written: no defaults slip into it.
    assert route.settings == {"repository": "acme/shop", "token_secret": "relco/github"}
    assert route_key(route).startswith("github-")
    assert not receives(route, Notification.PROGRESS)


def test_enterprise_server_and_an_environment_of_its_own(tmp_path: Path) -> None:
    settings = route_of(
        tmp_path,
        'repository = "acme/shop"\ntoken_parameter = "/relco/github"\n'
        'api_url = "https://ghe.acme.example/api/v3/"\nenvironment = "production"\n',
    )
    assert (settings.base_url, settings.environment_for("shop-prod")) == (
        "https://ghe.acme.example/api/v3",
        "production",
    )


def test_statuses_link_the_release_page_the_route_names(tmp_path: Path) -> None:
    written = (
        'repository = "acme/shop"\ntoken_secret = "t"\n'
        'release_url = "http://127.0.0.1:8765/#/release/{release_id}"\n'
        'environment_url = "https://shop.acme.example/"\n'
    )
    settings = route_of(tmp_path, written)
    assert settings.release_link("rel-01/x") == "http://127.0.0.1:8765/#/release/rel-01%2Fx"
    assert settings.environment_url == "https://shop.acme.example/"
    assert GithubSettings.from_written(settings.as_written()) == settings


def test_without_release_url_no_link(tmp_path: Path) -> None:
    settings = route_of(tmp_path, 'repository = "acme/shop"\ntoken_secret = "t"\n')
    assert (settings.release_link("rel-01"), settings.environment_url) == (None, None)


@pytest.mark.parametrize(
    "api_url", ["http://127.0.0.1:9000", "http://[::1]:9000/api", "http://localhost/", "https://ghe.acme"]
)
def test_http_api_url_only_to_this_machine(tmp_path: Path, api_url: str) -> None:
    settings = route_of(tmp_path, f'repository = "a/b"\ntoken_secret = "t"\napi_url = "{api_url}"\n')
    assert settings.api_url == api_url


def test_the_token_is_not_in_a_repositorys_repr() -> None:
    repository = GithubRepository("https://api.github.com", "acme/shop", "ghp_s3cret")
    assert "ghp_s3cret" not in repr(repository)
    assert "ghp_s3cret" not in str(repository)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ('token_secret = "t"\n', "notify[1].repository': is required"),
        ('repository = "acme"\ntoken_secret = "t"\n', 'must be a GitHub repository "owner/name"'),
        ('repository = "acme/shop"\n', "set exactly one of token_parameter, token_secret"),
        ('repository = "a/b"\ntoken_secret = "t"\napi_url = "ghe.acme"\n', "must be an https URL"),
        # The token would cross the network in clear.
        (
            'repository = "a/b"\ntoken_secret = "t"\napi_url = "http://ghe.acme/api/v3"\n',
            "must be an https URL (the token goes with every call; http only to 127.0.0.1",
        ),
        ('repository = "a/b"\ntoken_secret = "t"\napi_url = "http://127.0.0.1.evil.example/"\n', "https"),
        (
            'repository = "a/b"\ntoken_secret = "t"\nrelease_url = "https://relco.acme/releases"\n',
            "with {release_id} where the release's id goes",
        ),
        (
            'repository = "a/b"\ntoken_secret = "t"\nrelease_url = "relco.acme/{release_id}"\n',
            "must be an http(s) URL with {release_id}",
        ),
        ('repository = "a/b"\ntoken_secret = "t"\nenvironment_url = "shop"\n', "must be an http(s) URL"),
        (
            'repository = "a/b"\ntoken_secret = "t"\ntoken = "ghp_x"\n',
            "unknown key for kind 'github'",
        ),
    ],
)
def test_a_bad_github_route_fails_at_load(tmp_path: Path, settings: str, message: str) -> None:
    with pytest.raises(PipelinesConfigError, match=re.escape(message)):
        route_of(tmp_path, settings)


NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("status", "headers", "message", "wait"),
    [
        # A secondary limit's retry-after wins over everything else.
        (403, {"retry-after": "30", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000100"}, "", 30),
        (429, {"retry-after": "5"}, "", 5),
        # The primary limit: until the reset, at least a second.
        (
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000090"},
            "API rate limit exceeded",
            90,
        ),
        (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1699999999"}, "", 1),
        # A secondary limit that says so only in its message, or a bare 429: a minute.
        (403, {}, "You have exceeded a secondary rate limit", SECONDARY_LIMIT_WAIT_S),
        (429, {}, "", SECONDARY_LIMIT_WAIT_S),
        # A 403 without any sign of a limit is a permission refusal; other statuses are no limit.
        (403, {"x-ratelimit-remaining": "4999"}, "Resource not accessible by integration", None),
        (502, {"retry-after": "5"}, "", None),
    ],
)
def test_rate_limit_waits_are_read_as_github_documents(
    status: int, headers: dict[str, str], message: str, wait: int | None
) -> None:
    assert rate_limit_wait_s(status, headers, message, NOW) == wait
