def test_forward_and_gradients_answer(client, small_body):
    r = client.post("/v1/forward", json=small_body)
    assert r.status_code == 200
    assert len(r.json["outputs"]) == 3 and r.json["step_losses"][1] is None
    g = client.post("/v1/gradients", json=small_body).json
    assert set(g["gradients"]) == {"V", "W", "U", "b_h", "b_y", "h_init"}
