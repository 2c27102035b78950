"""Structured output through relay with client libraries that want a venv of their own (their pins
clash with the test venv's lock): the Agents SDK, instructor, LiteLLM and `llm`. Run by
tests/test_structured.py with that venv's python; prints one JSON object of what each library got.

    python structured_libraries.py BASE_URL API_KEY MODEL
"""

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from pydantic import BaseModel


class City(BaseModel):
    name: str
    population: int


async def agents_sdk(client, model: str) -> dict:
    from agents import Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)  # no traces leave this machine
    got = {}
    for name, chosen in (("chat", OpenAIChatCompletionsModel(model, client)), ("responses", OpenAIResponsesModel(model, client))):
        result = await Runner.run(Agent(name="city", instructions="Name a city.", output_type=City, model=chosen), "A city")
        got[name] = result.final_output.model_dump()
    return got


async def instructor_modes(client, model: str) -> dict:
    import instructor

    schema = instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA)
    tools = instructor.from_openai(client, mode=instructor.Mode.RESPONSES_TOOLS)
    messages = [{"role": "user", "content": "A city"}]
    return {
        "json_schema": (await schema.chat.completions.create(model=model, response_model=City, messages=messages)).model_dump(),
        "responses_tools": (await tools.responses.create(model=model, response_model=City, input="A city")).model_dump(),
    }


async def litellm_format(base: str, key: str, model: str) -> dict:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no cost map fetched from the internet
    import litellm

    messages = [{"role": "user", "content": "A city"}]
    done = await litellm.acompletion(model=f"openai/{model}", api_base=base, api_key=key, messages=messages, response_format=City)
    return json.loads(done.choices[0].message.content)


def llm_schema(base: str, key: str, model: str) -> dict:
    home = Path(tempfile.mkdtemp())
    (home / "extra-openai-models.yaml").write_text(
        f"- model_id: relay\n  model_name: {model}\n  api_base: {base}\n  api_key_name: relay\n  supports_schema: true\n"
    )
    (home / "keys.json").write_text(json.dumps({"relay": key}))
    os.environ["LLM_USER_PATH"] = str(home)
    import llm

    return json.loads(llm.get_model("relay").prompt("A city", schema=City).text())


async def main(base: str, key: str, model: str) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=base, api_key=key, max_retries=0)
    got = {"agents": await agents_sdk(client, model), "instructor": await instructor_modes(client, model)}
    got["litellm"] = await litellm_format(base, key, model)
    got["llm"] = await asyncio.to_thread(llm_schema, base, key, model)
    await client.close()
    print(json.dumps(got))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
