"""Signing in, creating an account, signing out; tokens refreshed without two tabs burning one refresh token."""

from __future__ import annotations

import asyncio

from playwright.async_api import expect

from tests.conftest import TEST_PASSWORD, UserFactory
from tests.web.conftest import Web, WebFactory, axe_violations, describe


async def test_the_first_account_created_is_the_admin_and_can_sign_out_and_back_in(web_factory: WebFactory) -> None:
    web = await web_factory(registration="first_user")
    page = await web.new_page()
    await page.goto(web.base_url + "/")
    assert not await axe_violations(page), describe(await axe_violations(page))
    await page.get_by_role("textbox", name="Email").fill("First@Example.com")
    await page.get_by_role("textbox", name="Password").fill(TEST_PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(page.get_by_role("navigation", name="Chats")).to_be_visible()
    role = await web.server.app.state.pool.fetchval("SELECT role FROM users WHERE email = 'first@example.com'")
    assert role == "admin"

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert await page.evaluate("localStorage.getItem('chinwag.tokens')") is None

    # Registration closed behind the first user: the server's reason is shown as it is.
    await page.get_by_role("textbox", name="Email").fill("second@example.com")
    await page.get_by_role("textbox", name="Password").fill(TEST_PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("alert")).to_contain_text("egistration")

    await page.get_by_role("textbox", name="Email").fill("first@example.com")
    await page.get_by_role("textbox", name="Password").fill("wrong password!")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("That email and password do not match an account.")
    await page.get_by_role("textbox", name="Password").fill(TEST_PASSWORD)
    await page.get_by_role("textbox", name="Password").press("Enter")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    # A refresh of the page finds the tokens and stays signed in.
    await page.reload()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()


async def test_two_tabs_refreshing_at_once_do_not_burn_the_sign_in(
    web_factory: WebFactory, user_factory: UserFactory
) -> None:
    """Access tokens that expire at once: every request refreshes. Refresh tokens rotate, and a spent one revokes
    the whole sign-in, so unserialized refreshes in two tabs would sign both out."""
    web: Web = await web_factory(access_token_ttl_s=5)
    user = await user_factory(web.server)
    await web.create_session(user, "Other")
    session = await web.create_session(user, "Shared")
    first = await web.new_page()
    await web.sign_in(first, user, f"/s/{session['id']}")
    second = await web.new_page()
    await second.goto(web.base_url + "/")
    # Switching chats inside the page (no unload: a page that goes away mid-refresh loses the new pair, which no
    # lock can prevent) makes each tab send several requests, each refreshing first, both tabs at once.
    for round_ in range(6):
        names = ("Other", "Shared") if round_ % 2 == 0 else ("Shared", "Other")
        await asyncio.gather(
            *(
                page.get_by_role("navigation", name="Chats").get_by_role("link", name=name).click()
                for page, name in zip((first, second), names, strict=True)
            )
        )
        for page, name in zip((first, second), names, strict=True):
            await expect(page.get_by_role("heading", name=name)).to_be_visible()
            await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    pool = web.server.app.state.pool
    assert await pool.fetchval("SELECT count(*) FROM refresh_tokens WHERE used_at IS NOT NULL") >= 4  # it refreshed
    assert await pool.fetchval("SELECT count(*) FROM refresh_tokens WHERE revoked_at IS NOT NULL") == 0
