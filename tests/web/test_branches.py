"""Versions in the browser: Regenerate on an answer, Edit on a question (an inline editor), Previous/Next version
where a message has siblings, and Export (JSON and Markdown downloads)."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.async_api import Page, expect

from tests.conftest import TestUser
from tests.fakes.openai_script import say
from tests.web.conftest import Web, articles, axe_violations, body, conversation, describe, send


async def open_chat(web: Web, user: TestUser) -> tuple[Page, str]:
    session = await web.create_session(user, "Versions")  # titled: no title request takes a scripted answer
    page = await web.new_page()
    await web.sign_in(page, user, f"/s/{session['id']}")
    return page, session["id"]


async def test_regenerate_then_flip_between_the_versions(web: Web, user: TestUser) -> None:
    page, session_id = await open_chat(web, user)
    web.fake.script(say("Answer one."), say("Answer two."))
    await send(page, "Question?")
    answer = articles(page, "assistant").last
    await expect(body(answer)).to_have_text("Answer one.")
    await expect(answer.get_by_role("button", name="Previous version")).to_have_count(0)  # one version only

    await answer.get_by_role("button", name="Regenerate").click()
    answer = articles(page, "assistant").last
    await expect(body(answer)).to_have_text("Answer two.")
    await expect(answer).to_have_attribute("data-seq", "3")
    await expect(answer).to_contain_text("2 / 2")
    await expect(conversation(page).get_by_role("article")).to_have_count(2)
    await expect(answer.get_by_role("button", name="Next version")).to_be_disabled()

    await answer.get_by_role("button", name="Previous version").click()
    answer = articles(page, "assistant").last
    await expect(body(answer)).to_have_text("Answer one.")
    await expect(answer).to_have_attribute("data-seq", "2")
    await expect(answer).to_contain_text("1 / 2")
    assert [m["seq"] for m in await web.history(user, session_id)] == [1, 2]

    await answer.get_by_role("button", name="Next version").click()
    await expect(body(articles(page, "assistant").last)).to_have_text("Answer two.")
    assert not await axe_violations(page), describe(await axe_violations(page))


async def test_edit_a_question_inline_and_send_it_again(web: Web, user: TestUser, tmp_path: Path) -> None:
    page, session_id = await open_chat(web, user)
    web.fake.script(say("First answer."), say("Second answer."), say("Answer to the edit."))
    await send(page, "First question")
    await expect(body(articles(page, "assistant").last)).to_have_text("First answer.")
    await send(page, "Second question")
    await expect(body(articles(page, "assistant").last)).to_have_text("Second answer.")

    first = articles(page, "user").first
    await first.get_by_role("button", name="Edit").click()
    editor = first.get_by_role("textbox", name="Edit message")
    await expect(editor).to_have_value("First question")
    await editor.fill("First question, edited")
    await first.get_by_role("button", name="Send edit").click()

    await expect(body(articles(page, "assistant").last)).to_have_text("Answer to the edit.")
    await expect(conversation(page).get_by_role("article")).to_have_count(2)
    await expect(articles(page, "user")).to_have_count(1)
    question = articles(page, "user").first
    await expect(body(question)).to_have_text("First question, edited")
    await expect(question).to_contain_text("2 / 2")
    history = await web.history(user, session_id)
    assert [(m["seq"], m["content"]) for m in history] == [(5, "First question, edited"), (6, "Answer to the edit.")]
    assert web.fake.last_request.body["messages"][-1]["content"] == "First question, edited"

    # The first version, with everything that followed it, is one click away.
    await question.get_by_role("button", name="Previous version").click()
    await expect(conversation(page).get_by_role("article")).to_have_count(4)
    await expect(body(articles(page, "user").first)).to_have_text("First question")

    await page.screenshot(path=str(tmp_path / "versions.png"))  # for a person to look at when this fails


async def test_an_edit_cancelled_changes_nothing(web: Web, user: TestUser) -> None:
    page, session_id = await open_chat(web, user)
    web.fake.script(say("An answer."))
    await send(page, "A question")
    await expect(body(articles(page, "assistant").last)).to_have_text("An answer.")
    question = articles(page, "user").first
    await question.get_by_role("button", name="Edit").click()
    await question.get_by_role("textbox", name="Edit message").fill("never sent")
    await question.get_by_role("button", name="Cancel").click()
    await expect(question.get_by_role("textbox", name="Edit message")).to_have_count(0)
    await expect(body(question)).to_have_text("A question")
    assert len(web.fake.requests) == 1
    assert [m["content"] for m in await web.history(user, session_id)] == ["A question", "An answer."]


async def test_export_downloads_json_and_markdown(web: Web, user: TestUser, tmp_path: Path) -> None:
    page, session_id = await open_chat(web, user)
    web.fake.script(say("Hello there."))
    await send(page, "Hi")
    await expect(body(articles(page, "assistant").last)).to_have_text("Hello there.")

    for name, suffix in (("Download JSON", ".json"), ("Download Markdown", ".md")):
        await page.get_by_role("button", name="Export").click()
        async with page.expect_download() as info:
            await page.get_by_role("button", name=name).click()
        download = await info.value
        assert download.suggested_filename.endswith(suffix)
        path = tmp_path / download.suggested_filename
        await download.save_as(path)
        text = path.read_text()
        if suffix == ".json":
            exported = json.loads(text)
            assert exported["session"]["id"] == session_id
            assert [m["content"] for m in exported["messages"]] == ["Hi", "Hello there."]
        else:
            assert download.suggested_filename == "Versions.md"
            assert text == "# Versions\n\n## User\n\nHi\n\n## Assistant\n\nHello there.\n\n"
