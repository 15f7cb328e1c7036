#[palisade::protocol]
trait Chat {
    #[event("typing")]
    async fn typing(payload: ());
}

fn main() {}
