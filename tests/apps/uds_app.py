"""A FastAPI app for the Unix-socket tests: shows what the app learns about the connection."""

from fastapi import FastAPI, Request

app = FastAPI()


@app.get("/who")
async def who(request: Request) -> dict:
    client = request.client
    return {
        "client": None if client is None else [client.host, client.port],
        "server": request.scope["server"],
        "scheme": request.url.scheme,
    }


@app.post("/echo")
async def echo(request: Request) -> dict:
    body = await request.body()
    return {"length": len(body), "tail": body[-16:].decode()}
