"""OpenAI and OpenAI-compatible servers (vLLM, TGI, llama.cpp, Ollama…) through the ``openai`` package.

::

    import ragtrail
    from ragtrail.connectors import openai as rt_openai

    ragtrail.init(project="my-app")
    rt_openai.instrument()             # include_usage=True, provider=None
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
    client.chat.completions.create(model="m", messages=[...])   # → one LLM span

Importing this module does not import ``openai``; ``instrument()`` does.
"""

from ragtrail.connectors._common import module_functions
from ragtrail.connectors.openai._instrumentor import OpenAIInstrumentor, failures

instrument, uninstrument = module_functions(OpenAIInstrumentor)

Instrumentor = OpenAIInstrumentor

__all__ = ["Instrumentor", "OpenAIInstrumentor", "failures", "instrument", "uninstrument"]
