struct Join {
    room: String,
}

#[palisade::protocol]
trait Chat {
    #[event("room.join")]
    async fn join(&mut self, payload: Join);
}

fn main() {}
