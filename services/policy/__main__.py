from services.policy.server import main

main()
